"""Memberships and how users are shown, from the per-process caches (``caches``) or, for
what they do not hold, from the database in one Core statement, kept for the next time."""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat.caches import HotCaches, Membership, Shown
from cmschat.chat.models import MemberRole, Room, RoomKind, RoomMember

ROOMS = cast(Table, Room.__table__)
MEMBERS = cast(Table, RoomMember.__table__)
USERS = cast(Table, User.__table__)


async def memberships(
    session: AsyncSession, caches: HotCaches | None, pairs: Collection[tuple[int, int]]
) -> dict[tuple[int, int], Membership]:
    """Per (room, user) pair that is a membership: the member's role and room's facts.

    Pairs missing from the answer are not memberships (never cached: asked every time).
    """
    found: dict[tuple[int, int], Membership] = {}
    missing = []
    for pair in pairs:
        cached = caches.membership(*pair) if caches is not None else None
        if cached is None:
            missing.append(pair)
        else:
            found[pair] = cached
    if not missing:
        return found
    epoch = caches.epoch if caches is not None else 0
    m, r = MEMBERS.c, ROOMS.c
    statement = select(m.room_id, m.user_id, m.role, r.archived, r.kind).join(
        ROOMS, r.id == m.room_id
    )
    if len(missing) == 1:
        # The single-pair form uses the primary key on every backend's planner.
        ((room_id, user_id),) = missing
        statement = statement.where(m.room_id == room_id, m.user_id == user_id)
    else:
        statement = statement.where(tuple_(m.room_id, m.user_id).in_(missing))
    for room_id, user_id, role, archived, kind in await session.execute(statement):
        membership = Membership(role=MemberRole(role), archived=bool(archived), kind=RoomKind(kind))
        found[(room_id, user_id)] = membership
        if caches is not None:
            caches.keep_membership(epoch, room_id, user_id, membership)
    return found


async def shown(
    session: AsyncSession, caches: HotCaches | None, user_ids: Collection[int]
) -> dict[int, Shown]:
    """How each of these users is shown (users that do not exist are left out)."""
    found: dict[int, Shown] = {}
    missing = []
    for user_id in user_ids:
        cached = caches.shown(user_id) if caches is not None else None
        if cached is None:
            missing.append(user_id)
        else:
            found[user_id] = cached
    if not missing:
        return found
    epoch = caches.epoch if caches is not None else 0
    u = USERS.c
    rows = await session.execute(select(u.id, u.username, u.display_name).where(u.id.in_(missing)))
    for user_id, username, display_name in rows:
        found[user_id] = user = Shown(username=username, display_name=display_name)
        if caches is not None:
            caches.keep_shown(epoch, user_id, user)
    return found
