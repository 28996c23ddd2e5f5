"""Room roles: each rule of ``chat.permissions`` for every role, allowed and refused."""

from __future__ import annotations

import pytest

from cmschat.accounts.models import Role, User
from cmschat.chat import permissions
from cmschat.chat.models import MemberRole, Message, RoomMember
from cmschat.errors import Forbidden

ROOM = 7
ADMIN = User(id=1, username="root-admin", role=Role.admin)
OWNER = User(id=2, username="olive", role=Role.member)
MODERATOR = User(id=3, username="mo", role=Role.member)
MEMBER = User(id=4, username="mia", role=Role.member)
OUTSIDER = User(id=5, username="otto", role=Role.member)
AGENT = User(id=6, username="agnes", role=Role.agent)


def member(user: User, role: MemberRole) -> RoomMember:
    """``user``'s membership of the room with ``role``."""
    return RoomMember(room_id=ROOM, user_id=user.id, role=role)


MEMBERSHIPS: dict[int, RoomMember | None] = {
    ADMIN.id: None,
    OWNER.id: member(OWNER, MemberRole.owner),
    MODERATOR.id: member(MODERATOR, MemberRole.moderator),
    MEMBER.id: member(MEMBER, MemberRole.member),
    OUTSIDER.id: None,
    AGENT.id: None,
}


def mine(user: User) -> RoomMember | None:
    """The membership the room gives ``user`` (None outside it)."""
    return MEMBERSHIPS[user.id]


MANAGES = [(ADMIN, True), (OWNER, True), (MODERATOR, True), (MEMBER, False), (OUTSIDER, False)]


@pytest.mark.parametrize(("user", "allowed"), MANAGES, ids=lambda v: getattr(v, "username", v))
def test_managers_are_owner_moderators_and_admins(user: User, allowed: bool) -> None:
    assert permissions.can_manage(user, mine(user)) is allowed
    if allowed:
        permissions.require_manager(user, mine(user), to="add members")
    else:
        with pytest.raises(Forbidden, match="only the room's owner or moderators may add members"):
            permissions.require_manager(user, mine(user), to="add members")


def test_an_agent_manages_no_room_of_theirs_by_account_role() -> None:
    with pytest.raises(Forbidden):
        permissions.require_manager(AGENT, mine(AGENT), to="change it")


@pytest.mark.parametrize(
    ("user", "allowed"),
    [(ADMIN, True), (OWNER, True), (MODERATOR, False), (MEMBER, False), (OUTSIDER, False)],
    ids=lambda v: getattr(v, "username", v),
)
def test_only_the_owner_and_admins_change_roles(user: User, allowed: bool) -> None:
    if allowed:
        permissions.require_owner(user, mine(user))
    else:
        with pytest.raises(Forbidden, match="only the room's owner may change roles"):
            permissions.require_owner(user, mine(user))


@pytest.mark.parametrize(
    ("user", "target", "refusal"),
    [
        (ADMIN, OWNER, None),
        (OWNER, MODERATOR, None),
        (OWNER, MEMBER, None),
        (MODERATOR, MEMBER, None),
        (MODERATOR, OWNER, "moderators cannot remove the owner"),
        (MEMBER, MODERATOR, "only the room's owner or moderators may remove members"),
        (OUTSIDER, MEMBER, "only the room's owner or moderators may remove members"),
        (MEMBER, MEMBER, None),  # leaving
        (OWNER, OWNER, None),  # leaving
    ],
    ids=lambda v: getattr(v, "username", v),
)
def test_who_may_remove_whom(user: User, target: User, refusal: str | None) -> None:
    target_member = mine(target)
    assert target_member is not None
    if refusal is None:
        permissions.require_can_remove(user, mine(user), target_member)
    else:
        with pytest.raises(Forbidden, match=refusal):
            permissions.require_can_remove(user, mine(user), target_member)


def test_only_the_author_edits() -> None:
    message = Message(room_id=ROOM, author_id=MEMBER.id)
    permissions.require_author(MEMBER, message)
    for other in (ADMIN, OWNER, MODERATOR, OUTSIDER):
        with pytest.raises(Forbidden, match="only the author may edit a message"):
            permissions.require_author(other, message)


@pytest.mark.parametrize(
    ("user", "allowed"),
    [(ADMIN, True), (OWNER, True), (MODERATOR, True), (MEMBER, True), (OUTSIDER, False)],
    ids=lambda v: getattr(v, "username", v),
)
def test_who_deletes_a_message_of_someone_else(user: User, allowed: bool) -> None:
    # MEMBER is the author: allowed as such; the others delete someone else's message.
    message = Message(room_id=ROOM, author_id=MEMBER.id)
    assert permissions.can_delete_message(user, mine(user), message) is allowed
    if allowed:
        permissions.require_can_delete_message(user, mine(user), message)
    else:
        with pytest.raises(Forbidden, match="only the author, room moderators and admins"):
            permissions.require_can_delete_message(user, mine(user), message)


def test_a_plain_member_deletes_only_their_own() -> None:
    message = Message(room_id=ROOM, author_id=OWNER.id)
    with pytest.raises(Forbidden):
        permissions.require_can_delete_message(MEMBER, mine(MEMBER), message)
