"""Rooms and membership: create, change, join and leave (who may: ``permissions``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.audit import service as audit
from cmschat.chat.events import Published, append_event
from cmschat.chat.models import EventType, MemberRole, Room, RoomKind, RoomMember
from cmschat.chat.permissions import (
    membership,
    require_can_remove,
    require_manager,
    require_owner,
    require_visible_room,
)
from cmschat.errors import Conflict, Invalid, NotFound
from cmschat.events import member_changed, queue_events


async def _active_users(session: AsyncSession, user_ids: set[int]) -> dict[int, User]:
    users = (
        await session.scalars(select(User).where(User.id.in_(user_ids), User.is_active.is_(True)))
    ).all()
    found = {user.id: user for user in users}
    missing = sorted(user_ids - set(found))
    if missing:
        raise Invalid(f"no active user with id {missing[0]}", field="member_ids")
    return found


def _member_event(event_type: EventType, room_id: int, seq: int, user: User) -> Published:
    return Published(
        room_id=room_id,
        seq=seq,
        type=event_type.value,
        user_id=user.id,
        payload={
            "user": {"id": user.id, "username": user.username, "display_name": user.display_name}
        },
    )


async def _add_member(session: AsyncSession, room: Room, user: User, role: MemberRole) -> None:
    # A newcomer starts with everything before their arrival read: the backlog is history,
    # not unread news.
    session.add(
        RoomMember(room_id=room.id, user_id=user.id, role=role, last_read_seq=room.last_seq)
    )
    event = await append_event(
        session, room_id=room.id, type=EventType.member_joined, user_id=user.id
    )
    queue_events(session, [_member_event(EventType.member_joined, room.id, event.seq, user)])


async def create_room(
    session: AsyncSession,
    *,
    creator: User,
    kind: RoomKind,
    name: str | None,
    topic: str | None,
    member_ids: list[int],
) -> tuple[Room, bool]:
    """Create a room (the creator owns it); a direct room for a pair that has one is returned."""
    others = set(member_ids) - {creator.id}
    users = await _active_users(session, others)
    if kind is RoomKind.direct:
        if len(others) != 1:
            raise Invalid("a direct room has exactly one other member", field="member_ids")
        if name is not None:
            raise Invalid("direct rooms have no name", field="name")
        low, high = sorted((creator.id, *others))
        key = f"{low}:{high}"
        existing = await session.scalar(select(Room).where(Room.direct_key == key))
        if existing is not None:
            return existing, False
    else:
        key = None
        if not name:
            raise Invalid("a group or channel needs a name", field="name")
    room = Room(kind=kind, name=name, topic=topic, archived=False, last_seq=0, direct_key=key)
    try:
        # Added inside the savepoint: begin_nested() flushes pending rows *before* it, so
        # a clash there would doom the whole transaction instead of just the savepoint.
        async with session.begin_nested():
            session.add(room)
            await session.flush()
    except IntegrityError:
        # Another request created the same direct room a moment ago (READ COMMITTED lets
        # us see it once its transaction is done).
        existing = await session.scalar(select(Room).where(Room.direct_key == key))
        if existing is None:
            raise
        return existing, False
    creator_role = MemberRole.member if kind is RoomKind.direct else MemberRole.owner
    await _add_member(session, room, creator, creator_role)
    for user_id in sorted(others):
        await _add_member(session, room, users[user_id], MemberRole.member)
    await session.flush()
    audit.record(
        session,
        action="room.created",
        target_type="room",
        target_id=room.id,
        changes={"kind": kind, "name": name, "topic": topic, "member_ids": sorted(others)},
    )
    return room, True


async def update_room(
    session: AsyncSession,
    *,
    user: User,
    room_id: int,
    name: str | None = None,
    topic: str | None = None,
    archived: bool | None = None,
    fields: set[str],
) -> Room:
    """Rename, re-topic or (un)archive: room owners and moderators, and admins."""
    room = await require_visible_room(session, user=user, room_id=room_id)
    # Checked first: no one may rename a direct room, so "not the owner" would mislead.
    if room.kind is RoomKind.direct and ({"name", "topic"} & fields):
        raise Invalid("direct rooms have no name or topic", field="name")
    require_manager(user, await membership(session, user=user, room_id=room_id), to="change it")
    before = {"name": room.name, "topic": room.topic, "archived": room.archived}
    if "name" in fields:
        if not name:
            raise Invalid("a group or channel needs a name", field="name")
        room.name = name
    if "topic" in fields:
        room.topic = topic or None
    if "archived" in fields and archived is not None:
        room.archived = archived
    event = await append_event(session, room_id=room.id, type=EventType.room_updated)
    await session.flush()
    after = {"name": room.name, "topic": room.topic, "archived": room.archived}
    audit.record(
        session,
        action="room.updated",
        target_type="room",
        target_id=room.id,
        changes=audit.changed(before, after),
    )
    payload = {
        "room": {"id": room.id, "name": room.name, "topic": room.topic, "archived": room.archived}
    }
    queue_events(
        session,
        [
            Published(
                room_id=room.id, seq=event.seq, type=EventType.room_updated.value, payload=payload
            )
        ],
    )
    return room


async def add_members(
    session: AsyncSession, *, user: User, room_id: int, user_ids: list[int]
) -> Room:
    """Add members: managers and admins add anyone; anyone may join a channel themselves."""
    room = await require_visible_room(session, user=user, room_id=room_id)
    if room.kind is RoomKind.direct:
        raise Invalid("a direct room always has exactly its two members", field="user_ids")
    if room.archived:
        raise Conflict("the room is archived", code="room_archived")
    # Anyone may join a channel themselves; adding others takes a manager.
    if not (set(user_ids) == {user.id} and room.kind is RoomKind.channel):
        member = await membership(session, user=user, room_id=room_id)
        require_manager(user, member, to="add members")
    users = await _active_users(session, set(user_ids))
    existing = set(
        (
            await session.scalars(
                select(RoomMember.user_id).where(
                    RoomMember.room_id == room_id, RoomMember.user_id.in_(users)
                )
            )
        ).all()
    )
    added = sorted(set(users) - existing)
    for user_id in added:
        await _add_member(session, room, users[user_id], MemberRole.member)
    await session.flush()
    if added:
        audit.record(
            session,
            action="room.members_added",
            target_type="room",
            target_id=room.id,
            changes={"user_ids": added},
        )
    return room


async def remove_member(session: AsyncSession, *, user: User, room_id: int, user_id: int) -> None:
    """Leave a room, or remove someone (managers; moderators cannot remove the owner)."""
    room = await require_visible_room(session, user=user, room_id=room_id)
    if room.kind is RoomKind.direct:
        raise Invalid("nobody leaves a direct room", field="user_id")
    target = await session.get(RoomMember, (room_id, user_id))
    if target is None:
        raise NotFound("no such member")
    if user_id != user.id:
        require_can_remove(user, await membership(session, user=user, room_id=room_id), target)
    removed = await session.get(User, user_id)
    audit.record(
        session,
        action="room.member_left" if user_id == user.id else "room.member_removed",
        target_type="room",
        target_id=room_id,
        changes={"user_id": user_id, "role": target.role},
    )
    await session.delete(target)
    event = await append_event(
        session, room_id=room_id, type=EventType.member_left, user_id=user_id
    )
    await session.flush()
    assert removed is not None  # noqa: S101 - the membership row references the user
    queue_events(session, [_member_event(EventType.member_left, room_id, event.seq, removed)])


async def set_member_role(
    session: AsyncSession, *, user: User, room_id: int, user_id: int, role: MemberRole
) -> tuple[RoomMember, User]:
    """Change a member's role: the owner and admins only."""
    await require_visible_room(session, user=user, room_id=room_id)
    require_owner(user, await membership(session, user=user, room_id=room_id))
    target = await session.get(RoomMember, (room_id, user_id))
    if target is None:
        raise NotFound("no such member")
    audit.record(
        session,
        action="room.member_role_changed",
        target_type="room",
        target_id=room_id,
        changes={"user_id": user_id, "role": [target.role, role]},
    )
    target.role = role
    await session.flush()
    queue_events(session, [member_changed(room_id, user_id)])
    member_user = await session.get(User, user_id)
    assert member_user is not None  # noqa: S101 - foreign key
    return target, member_user


async def list_channels(session: AsyncSession, *, limit: int = 100) -> list[Room]:
    """Public channels anyone may join (not archived), by name."""
    return list(
        (
            await session.scalars(
                select(Room)
                .where(Room.kind == RoomKind.channel, Room.archived.is_(False))
                .order_by(Room.name)
                .limit(limit)
            )
        ).all()
    )
