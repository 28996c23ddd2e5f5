"""Who may do what in a room: every room-role check of the services, in one place.

Account roles (admin, agent) are checked by the transports (``api.deps``); room roles
(owner, moderator, member) here. Two kinds of answer, on purpose:

- ``NotFound`` when the caller may not know the thing exists (a room they are not in, a
  message or attachment of such a room): the answer must not confirm that it does;
- ``Forbidden`` when they can see it but their role does not allow the change.

``require_*`` functions raise; ``can_*`` functions answer without raising.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import Role, User
from cmschat.chat import hot_reads
from cmschat.chat.caches import HotCaches
from cmschat.chat.models import MemberRole, Message, Room, RoomKind, RoomMember
from cmschat.db.driver_sql import Driver
from cmschat.errors import Conflict, Forbidden, NotFound

MANAGERS = (MemberRole.owner, MemberRole.moderator)
"""Room roles that manage a room: change it, add and remove members, delete messages."""


async def membership(session: AsyncSession, *, user: User, room_id: int) -> RoomMember | None:
    """The caller's membership of a room, or None."""
    return await session.get(RoomMember, (room_id, user.id))


async def check_member(
    session: AsyncSession, *, user: User, room_id: int, caches: HotCaches | None = None
) -> None:
    """NotFound unless the caller belongs to the room: from the process's caches, else one
    indexed lookup, no objects loaded (the read paths need only the answer)."""
    if (room_id, user.id) not in await hot_reads.memberships(session, caches, [(room_id, user.id)]):
        raise NotFound("no such room")


async def check_member_row(
    driver: Driver, *, user_id: int, room_id: int, caches: HotCaches | None
) -> None:
    """``check_member`` read with the driver (the hot GET's, which has no ORM session)."""
    if await hot_reads.membership(driver, caches, room_id=room_id, user_id=user_id) is None:
        raise NotFound("no such room")


async def require_member(
    session: AsyncSession, *, user: User, room_id: int
) -> tuple[Room, RoomMember]:
    """The room and the caller's membership; NotFound for non-members (no hint it exists)."""
    found = (
        await session.execute(
            select(Room, RoomMember)
            .join(RoomMember, RoomMember.room_id == Room.id)
            .where(Room.id == room_id, RoomMember.user_id == user.id)
        )
    ).first()
    if found is None:
        raise NotFound("no such room")
    room, member = found
    return room, member


async def require_visible_room(session: AsyncSession, *, user: User, room_id: int) -> Room:
    """A room the caller may act on: one they belong to, any channel, or any room for admins."""
    room = await session.get(Room, room_id)
    if room is None:
        raise NotFound("no such room")
    if room.kind is RoomKind.channel or user.role is Role.admin:
        return room
    if await membership(session, user=user, room_id=room_id) is None:
        raise NotFound("no such room")
    return room


async def require_open_member_room(session: AsyncSession, *, user: User, room_id: int) -> Room:
    """A room the caller belongs to that is not archived (to post into it)."""
    member = await membership(session, user=user, room_id=room_id)
    room = await session.get(Room, room_id)
    if member is None or room is None:
        raise NotFound("no such room")
    if room.archived:
        raise Conflict("the room is archived", code="room_archived")
    return room


def can_manage(user: User, member: RoomMember | None) -> bool:
    """Whether the caller manages the room: its owner or a moderator, or an admin."""
    return user.role is Role.admin or (member is not None and member.role in MANAGERS)


def require_manager(user: User, member: RoomMember | None, *, to: str) -> None:
    """Forbidden unless the caller manages the room; ``to`` names the change refused."""
    if not can_manage(user, member):
        raise Forbidden(f"only the room's owner or moderators may {to}")


def require_owner(user: User, member: RoomMember | None) -> None:
    """Forbidden unless the caller owns the room or is an admin (to change roles)."""
    if user.role is not Role.admin and (member is None or member.role is not MemberRole.owner):
        raise Forbidden("only the room's owner may change roles")


def require_can_remove(user: User, mine: RoomMember | None, target: RoomMember) -> None:
    """Anyone may leave; removing someone else takes a manager, and the owner takes the owner."""
    if target.user_id == user.id or user.role is Role.admin:
        return
    require_manager(user, mine, to="remove members")
    assert mine is not None  # noqa: S101 - require_manager refuses non-members
    if target.role is MemberRole.owner and mine.role is not MemberRole.owner:
        raise Forbidden("moderators cannot remove the owner")


async def require_readable_message(
    session: AsyncSession, *, user: User, message_id: int, for_update: bool = False
) -> tuple[Message, RoomMember | None]:
    """A message and the caller's membership of its room; NotFound unless a member or an admin.

    ``for_update``: its row locked (MariaDB) for the rest of the transaction."""
    message = await session.get(Message, message_id, with_for_update=for_update)
    if message is None:
        raise NotFound("no such message")
    member = await membership(session, user=user, room_id=message.room_id)
    if member is None and user.role is not Role.admin:
        raise NotFound("no such message")
    return message, member


def require_author(user: User, message: Message) -> None:
    """Forbidden unless the caller wrote the message (to edit it)."""
    if message.author_id != user.id:
        raise Forbidden("only the author may edit a message")


def can_delete_message(user: User, member: RoomMember | None, message: Message) -> bool:
    """Whether the caller may delete a message: its author, the room's managers, admins."""
    return message.author_id == user.id or can_manage(user, member)


def require_can_delete_message(user: User, member: RoomMember | None, message: Message) -> None:
    """Forbidden unless ``can_delete_message``."""
    if not can_delete_message(user, member, message):
        raise Forbidden("only the author, room moderators and admins may delete a message")


async def is_member(session: AsyncSession, *, user: User, room_id: int) -> bool:
    """Whether the caller belongs to the room (to read what was shared in it)."""
    return await membership(session, user=user, room_id=room_id) is not None
