"""Memberships and how users are shown, from the per-process caches (``caches``) or, for
what they do not hold, from the database in one Core statement, kept for the next time.

In a writer's transaction (a send batch) that statement goes through the transaction's
driver, not SQLAlchemy's execution: every entry leaves the caches ``cache_seconds`` after
it was read, so under lone sends (``ws_load``) one batch in five or so misses, and a read
through SQLAlchemy made that batch also begin and commit through its greenlet bridge
(docs/performance.md, "A durable send split by whose code").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, and_, bindparam, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat.caches import HotCaches, Membership, Shown
from cmschat.chat.models import MemberRole, Room, RoomKind, RoomMember
from cmschat.db.driver_sql import BySize, Driver, Statement
from cmschat.db.writer import WriterTransaction

ROOMS = cast(Table, Room.__table__)
MEMBERS = cast(Table, RoomMember.__table__)
USERS = cast(Table, User.__table__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_BY_DRIVER = 16
"""Misses read through a writer's driver at most (one statement per count kept); more,
after a flush, go through SQLAlchemy."""


def _membership_rows() -> Select[Any]:
    """A membership's columns, its room's with it (a row per pair asked for)."""
    m, r = MEMBERS.c, ROOMS.c
    return select(m.room_id, m.user_id, m.role, r.archived, r.kind).join_from(
        MEMBERS, ROOMS, r.id == m.room_id
    )


def _shown_rows() -> Select[Any]:
    """How users are shown: id, username, display name."""
    return select(USERS.c.id, USERS.c.username, USERS.c.display_name)


_PAIRS = BySize(
    lambda size: Statement(
        lambda _dialect: _membership_rows().where(
            or_(
                *(
                    and_(
                        MEMBERS.c.room_id == bindparam(f"r{n}"),
                        MEMBERS.c.user_id == bindparam(f"u{n}"),
                    )
                    for n in range(size)
                )
            )
        ),
        [name for n in range(size) for name in (f"r{n}", f"u{n}")],
    )
)
_USERS = BySize(
    lambda size: Statement(
        lambda _dialect: _shown_rows().where(
            USERS.c.id.in_([bindparam(f"u{n}") for n in range(size)])
        ),
        [f"u{n}" for n in range(size)],
    )
)


def _cached(
    keys: Collection[K], lookup: Callable[[K], V | None] | None
) -> tuple[dict[K, V], list[K]]:
    """What the caches hold of ``keys`` (``lookup``; None: no caches), and the keys they do not."""
    found: dict[K, V] = {}
    missing: list[K] = []
    if lookup is None:
        return found, list(keys)
    for key in keys:
        cached = lookup(key)
        if cached is None:
            missing.append(key)
        else:
            found[key] = cached
    return found, missing


async def memberships(
    session: AsyncSession | WriterTransaction,
    caches: HotCaches | None,
    pairs: Collection[tuple[int, int]],
) -> dict[tuple[int, int], Membership]:
    """Per (room, user) pair that is a membership: the member's role and room's facts.

    Pairs missing from the answer are not memberships (never cached: asked every time).
    """
    held = None if caches is None else (lambda pair: caches.membership(*pair))
    found, missing = _cached(pairs, held)
    if not missing:
        return found
    epoch = caches.epoch if caches is not None else 0
    rows: Iterable[Any]
    if isinstance(session, WriterTransaction) and len(missing) <= _BY_DRIVER:
        driver = await session.driver()
        rows = await driver.rows(_PAIRS(len(missing)), tuple(k for pair in missing for k in pair))
    else:
        m = MEMBERS.c
        statement = _membership_rows()
        if len(missing) == 1:
            # The single-pair form uses the primary key on every backend's planner.
            ((room_id, user_id),) = missing
            statement = statement.where(m.room_id == room_id, m.user_id == user_id)
        else:
            statement = statement.where(tuple_(m.room_id, m.user_id).in_(missing))
        rows = await session.execute(statement)
    for room_id, user_id, role, archived, kind in rows:
        membership = Membership(role=MemberRole(role), archived=bool(archived), kind=RoomKind(kind))
        found[(room_id, user_id)] = membership
        if caches is not None:
            caches.keep_membership(epoch, room_id, user_id, membership)
    return found


async def shown(
    session: AsyncSession | WriterTransaction, caches: HotCaches | None, user_ids: Collection[int]
) -> dict[int, Shown]:
    """How each of these users is shown (users that do not exist are left out)."""
    found, missing = _cached(user_ids, None if caches is None else caches.shown)
    if not missing:
        return found
    epoch = caches.epoch if caches is not None else 0
    u = USERS.c
    rows: Iterable[Any]
    if isinstance(session, WriterTransaction) and len(missing) <= _BY_DRIVER:
        rows = await (await session.driver()).rows(_USERS(len(missing)), tuple(missing))
    else:
        statement = _shown_rows().where(u.id.in_(missing))
        rows = await session.execute(statement)
    for user_id, username, display_name in rows:
        found[user_id] = user = Shown(username=username, display_name=display_name)
        if caches is not None:
            caches.keep_shown(epoch, user_id, user)
    return found


_MEMBERSHIP = Statement(
    lambda _dialect: (
        select(MEMBERS.c.role, ROOMS.c.archived, ROOMS.c.kind)
        .join_from(MEMBERS, ROOMS, ROOMS.c.id == MEMBERS.c.room_id)
        .where(MEMBERS.c.room_id == bindparam("room_id"), MEMBERS.c.user_id == bindparam("user_id"))
    ),
    ["room_id", "user_id"],
)


async def membership(
    driver: Driver, caches: HotCaches | None, *, room_id: int, user_id: int
) -> Membership | None:
    """``memberships`` of one pair, read with the driver when the caches do not hold it."""
    if caches is not None:
        held = caches.membership(room_id, user_id)
        if held is not None:
            return held
    epoch = caches.epoch if caches is not None else 0
    found = await driver.rows(_MEMBERSHIP, (room_id, user_id))
    if not found:
        return None
    role, archived, kind = found[0]
    member = Membership(role=MemberRole(role), archived=bool(archived), kind=RoomKind(kind))
    if caches is not None:
        caches.keep_membership(epoch, room_id, user_id, member)
    return member
