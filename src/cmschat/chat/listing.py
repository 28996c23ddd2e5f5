"""Rooms as their members see them: members, unread counts and the last message."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cmschat.accounts.models import User
from cmschat.chat.messages.reads import unread_counts
from cmschat.chat.messages.views import message_views
from cmschat.chat.models import Message, Room, RoomMember
from cmschat.chat.permissions import require_member
from cmschat.chat.schemas import MemberRead, RoomRead, UserBrief


async def room_views(session: AsyncSession, *, user: User, rooms: Sequence[Room]) -> list[RoomRead]:
    """The API shape of rooms, in a fixed number of queries whatever their count."""
    room_ids = [room.id for room in rooms]
    if not room_ids:
        return []
    members = (
        await session.execute(
            select(RoomMember, User)
            .join(User, User.id == RoomMember.user_id)
            .where(RoomMember.room_id.in_(room_ids))
            .order_by(RoomMember.room_id, User.username)
        )
    ).all()
    by_room: dict[int, list[MemberRead]] = {}
    for member, member_user in members:
        by_room.setdefault(member.room_id, []).append(
            MemberRead(
                user=UserBrief.model_validate(member_user),
                role=member.role,
                last_read_seq=member.last_read_seq,
            )
        )
    newest = (
        select(func.max(Message.seq).label("seq"), Message.room_id)
        .where(Message.room_id.in_(room_ids), Message.deleted_at.is_(None))
        .group_by(Message.room_id)
        .subquery()
    )
    last_messages = (
        await session.scalars(
            select(Message).join(
                newest, (Message.room_id == newest.c.room_id) & (Message.seq == newest.c.seq)
            )
        )
    ).all()
    last_views = {view.room_id: view for view in await message_views(session, last_messages)}
    counts = await unread_counts(session, user=user, room_ids=room_ids)
    views = []
    for room in rooms:
        room_members = by_room.get(room.id, [])
        mine = next((m.role for m in room_members if m.user.id == user.id), None)
        unread, mentioned = counts.get(room.id, (0, 0))
        views.append(
            RoomRead(
                id=room.id,
                kind=room.kind,
                name=room.name,
                topic=room.topic,
                archived=room.archived,
                last_seq=room.last_seq,
                members=room_members,
                my_role=mine,
                unread_count=unread,
                mention_count=mentioned,
                last_message=last_views.get(room.id),
                created_at=room.created_at,
                updated_at=room.updated_at,
            )
        )
    return views


async def list_rooms(session: AsyncSession, *, user: User) -> list[RoomRead]:
    """Every room the user belongs to, most recently active first."""
    rooms = (
        await session.scalars(
            select(Room)
            .join(RoomMember, RoomMember.room_id == Room.id)
            .where(RoomMember.user_id == user.id)
            .order_by(Room.last_seq.desc(), Room.id.desc())
        )
    ).all()
    views = await room_views(session, user=user, rooms=rooms)
    views.sort(
        key=lambda v: v.last_message.created_at if v.last_message else v.created_at, reverse=True
    )
    return views


async def room_view(session: AsyncSession, *, user: User, room_id: int) -> RoomRead:
    """One room the user belongs to."""
    room, _member = await require_member(session, user=user, room_id=room_id)
    return (await room_views(session, user=user, rooms=[room]))[0]


async def room_positions(session: AsyncSession, *, user_id: int) -> dict[int, int]:
    """The user's rooms and each one's newest ``seq``: where a connecting client starts."""
    rows = await session.execute(
        select(Room.id, Room.last_seq)
        .join(RoomMember, RoomMember.room_id == Room.id)
        .where(RoomMember.user_id == user_id)
    )
    return {room_id: last_seq for room_id, last_seq in rows.all()}


async def contacts_of(session: AsyncSession, *, user_id: int) -> tuple[int, ...]:
    """Everyone who shares at least one room with the user (who sees their presence)."""
    mine, theirs = aliased(RoomMember), aliased(RoomMember)
    rows = await session.scalars(
        select(theirs.user_id)
        .distinct()
        .join(mine, mine.room_id == theirs.room_id)
        .where(mine.user_id == user_id, theirs.user_id != user_id)
    )
    return tuple(sorted(rows.all()))
