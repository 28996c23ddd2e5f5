"""Room visibility in ``chat.permissions``: NotFound hides rooms and messages from outsiders."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat import permissions, rooms
from cmschat.chat.models import Message, RoomKind
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.errors import Conflict, NotFound
from tests.support import NamedUser

pytestmark = pytest.mark.usefixtures("admin", "alice", "bob", "agent")


async def users(session: AsyncSession, *named: NamedUser) -> list[User]:
    """The rows of named test users."""
    found = [await session.get(User, person.id) for person in named]
    assert all(found)
    return [user for user in found if user is not None]


async def make_room(context: AppContext, owner: NamedUser, kind: RoomKind, name: str) -> int:
    """A room ``owner`` creates alone; its id."""
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        (creator,) = await users(session, owner)
        room, _created = await rooms.create_room(
            session, creator=creator, kind=kind, name=name, topic=None, member_ids=[]
        )
        return room.id


async def test_members_see_their_group_outsiders_get_not_found(
    context: AppContext, admin: NamedUser, alice: NamedUser, bob: NamedUser, agent: NamedUser
) -> None:
    group = await make_room(context, alice, RoomKind.group, "Team")
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        a, b, root, staff = await users(session, alice, bob, admin, agent)
        room, member = await permissions.require_member(session, user=a, room_id=group)
        assert (room.id, member.user_id) == (group, a.id)
        assert await permissions.is_member(session, user=a, room_id=group)
        assert (await permissions.require_visible_room(session, user=a, room_id=group)).id == group
        # Admins act on any room, but are members of none they did not join.
        assert (await permissions.require_visible_room(session, user=root, room_id=group)).id
        for outsider in (b, staff, root):
            with pytest.raises(NotFound, match="no such room"):
                await permissions.require_member(session, user=outsider, room_id=group)
            assert not await permissions.is_member(session, user=outsider, room_id=group)
        for outsider in (b, staff):
            with pytest.raises(NotFound, match="no such room"):
                await permissions.require_visible_room(session, user=outsider, room_id=group)
        with pytest.raises(NotFound, match="no such room"):
            await permissions.require_visible_room(session, user=root, room_id=group + 1000)


async def test_channels_are_visible_to_everyone(
    context: AppContext, alice: NamedUser, bob: NamedUser
) -> None:
    channel = await make_room(context, alice, RoomKind.channel, "General")
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        (b,) = await users(session, bob)
        assert (await permissions.require_visible_room(session, user=b, room_id=channel)).id
        with pytest.raises(NotFound):
            await permissions.require_member(session, user=b, room_id=channel)


async def test_posting_needs_membership_of_an_open_room(
    context: AppContext, alice: NamedUser, bob: NamedUser
) -> None:
    group = await make_room(context, alice, RoomKind.group, "Team")
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        a, b = await users(session, alice, bob)
        assert (await permissions.require_open_member_room(session, user=a, room_id=group)).id
        with pytest.raises(NotFound, match="no such room"):
            await permissions.require_open_member_room(session, user=b, room_id=group)
        room, _member = await permissions.require_member(session, user=a, room_id=group)
        room.archived = True
        await session.flush()
        with pytest.raises(Conflict, match="archived"):
            await permissions.require_open_member_room(session, user=a, room_id=group)


async def test_messages_are_readable_by_members_and_admins_only(
    context: AppContext, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    group = await make_room(context, alice, RoomKind.group, "Team")
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        a, b, root = await users(session, alice, bob, admin)
        message = Message(room_id=group, seq=99, author_id=a.id, content="hi", content_html="hi")
        session.add(message)
        await session.flush()
        found, member = await permissions.require_readable_message(
            session, user=a, message_id=message.id
        )
        assert (found.id, member is not None) == (message.id, True)
        found, member = await permissions.require_readable_message(
            session, user=root, message_id=message.id
        )
        assert (found.id, member) == (message.id, None)
        for message_id in (message.id, message.id + 1000):
            with pytest.raises(NotFound, match="no such message"):
                await permissions.require_readable_message(session, user=b, message_id=message_id)
