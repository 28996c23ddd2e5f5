"""Rooms and membership through the HTTP API: who may see, change, join and leave what."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_SETUP
from tests.support import PASSWORD, NamedUser, error_of

ROOMS = "/api/v1/rooms"
CHANNELS = "/api/v1/channels"
Headers = dict[str, str]


@pytest.fixture
async def carol(context: AppContext) -> NamedUser:
    """A third member, for rooms bigger than a pair."""
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        user = await accounts.create_user(
            session,
            username="carol",
            password=PASSWORD,
            role=Role.member,
            display_name="Carol",
            must_change_password=False,
            bcrypt_rounds=context.settings.auth.bcrypt_rounds,
            clock=context.clock,
        )
    return NamedUser(id=user.id, username="carol", password=PASSWORD, role="member")


async def create(
    client: httpx.AsyncClient, headers: Headers, expect: int = 201, **body: Any
) -> dict[str, Any]:
    """POST /rooms and check the status; the room (or the error) as JSON."""
    body.setdefault("kind", "group")
    response = await client.post(ROOMS, headers=headers, json=body)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def group(client: httpx.AsyncClient, owner: Headers, *members: NamedUser) -> int:
    """A group owned by the caller with ``members``; its id."""
    room = await create(client, owner, name="Team", member_ids=[m.id for m in members])
    room_id: int = room["id"]
    return room_id


async def get_room(client: httpx.AsyncClient, headers: Headers, room_id: int) -> httpx.Response:
    """GET /rooms/{id}."""
    return await client.get(f"{ROOMS}/{room_id}", headers=headers)


async def my_room_ids(client: httpx.AsyncClient, headers: Headers) -> list[int]:
    """Ids of the rooms GET /rooms lists for the caller."""
    response = await client.get(ROOMS, headers=headers)
    assert response.status_code == 200, response.text
    return [room["id"] for room in response.json()["items"]]


def roles(room: dict[str, Any]) -> dict[str, str]:
    """Username -> role of a room's members."""
    return {m["user"]["username"]: m["role"] for m in room["members"]}


async def patch_room(
    client: httpx.AsyncClient, headers: Headers, room_id: int, **body: Any
) -> httpx.Response:
    """PATCH /rooms/{id}."""
    return await client.patch(f"{ROOMS}/{room_id}", headers=headers, json=body)


async def add(
    client: httpx.AsyncClient, headers: Headers, room_id: int, *users: NamedUser
) -> httpx.Response:
    """POST /rooms/{id}/members."""
    return await client.post(
        f"{ROOMS}/{room_id}/members", headers=headers, json={"user_ids": [u.id for u in users]}
    )


async def remove(
    client: httpx.AsyncClient, headers: Headers, room_id: int, user: NamedUser
) -> httpx.Response:
    """DELETE /rooms/{id}/members/{user_id}."""
    return await client.delete(f"{ROOMS}/{room_id}/members/{user.id}", headers=headers)


async def set_role(
    client: httpx.AsyncClient, headers: Headers, room_id: int, user: NamedUser, role: str
) -> httpx.Response:
    """PATCH /rooms/{id}/members/{user_id}."""
    return await client.patch(
        f"{ROOMS}/{room_id}/members/{user.id}", headers=headers, json={"role": role}
    )


async def send(
    client: httpx.AsyncClient, headers: Headers, room_id: int, content: str
) -> httpx.Response:
    """POST a message."""
    return await client.post(
        f"{ROOMS}/{room_id}/messages", headers=headers, json={"content": content}
    )


# --- creating rooms ---------------------------------------------------------------------


async def test_creating_a_group_makes_the_creator_owner(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await create(client, a, name="  Launch 🚀 ", topic="ship it", member_ids=[bob.id])
    assert room["kind"] == "group"
    assert room["name"] == "Launch 🚀"
    assert room["topic"] == "ship it"
    assert room["archived"] is False
    assert room["unread_count"] == 0 and room["mention_count"] == 0
    assert room["last_message"] is None
    assert room["my_role"] == "owner"
    assert [m["user"] for m in room["members"]] == [
        {"id": alice.id, "username": "alice", "display_name": "Alice"},
        {"id": bob.id, "username": "bob", "display_name": "Bob"},
    ]
    assert roles(room) == {"alice": "owner", "bob": "member"}

    seen_by_bob = await get_room(client, b, room["id"])
    assert seen_by_bob.status_code == 200
    assert seen_by_bob.json()["my_role"] == "member"
    assert roles(seen_by_bob.json()) == roles(room)
    assert await my_room_ids(client, b) == [room["id"]]
    assert await my_room_ids(client, a) == [room["id"]]


@pytest.mark.parametrize("kind", ["group", "channel"])
@pytest.mark.parametrize("name", [None, "", "   "])
async def test_groups_and_channels_need_a_name(
    client: httpx.AsyncClient, alice: NamedUser, kind: str, name: str | None
) -> None:
    a = await alice.login(client)
    body = {"kind": kind} | ({} if name is None else {"name": name})
    error = error_of(await client.post(ROOMS, headers=a, json=body))
    assert error["field"] == "name"
    assert (await client.post(ROOMS, headers=a, json=body)).status_code == 422
    assert await my_room_ids(client, a) == []


async def test_unknown_or_disabled_members_are_refused(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    a = await alice.login(client)
    unknown = await create(client, a, 422, name="Team", member_ids=[bob.id, 987654321])
    assert unknown["error"]["field"] == "member_ids"
    assert "987654321" in unknown["error"]["message"]

    disabled = await client.patch(
        f"/api/v1/admin/users/{bob.id}",
        headers=await admin.login(client),
        json={"is_active": False},
    )
    assert disabled.status_code == 200, disabled.text
    refused = await create(client, a, 422, name="Team", member_ids=[bob.id])
    assert refused["error"]["field"] == "member_ids"
    refused = await create(client, a, 422, kind="direct", member_ids=[bob.id])
    assert refused["error"]["field"] == "member_ids"
    assert await my_room_ids(client, a) == []


@pytest.mark.parametrize("others", [[], ["self"], ["bob", "carol"]])
async def test_a_direct_room_has_exactly_one_other_member(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    others: list[str],
) -> None:
    a = await alice.login(client)
    ids = {"self": alice.id, "bob": bob.id, "carol": carol.id}
    refused = await create(client, a, 422, kind="direct", member_ids=[ids[o] for o in others])
    assert refused["error"]["field"] == "member_ids"
    assert await my_room_ids(client, a) == []


async def test_a_direct_room_has_no_name(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a = await alice.login(client)
    refused = await create(client, a, 422, kind="direct", name="us", member_ids=[bob.id])
    assert refused["error"]["field"] == "name"
    assert await my_room_ids(client, a) == []


async def test_a_pair_has_one_direct_room_whoever_asks(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await create(client, a, kind="direct", member_ids=[bob.id])
    assert room["kind"] == "direct" and room["name"] is None
    assert roles(room) == {"alice": "member", "bob": "member"}
    for headers, member_ids in [
        (a, [bob.id]),
        (a, [bob.id, alice.id]),
        (b, [alice.id]),
        (b, [bob.id, alice.id]),
    ]:
        again = await create(client, headers, 200, kind="direct", member_ids=member_ids)
        assert again["id"] == room["id"]
    assert await my_room_ids(client, a) == [room["id"]]
    assert await my_room_ids(client, b) == [room["id"]]


async def test_racing_direct_room_requests_make_one_room(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    responses = await asyncio.gather(
        *(
            client.post(ROOMS, headers=h, json={"kind": "direct", "member_ids": [other]})
            for h, other in [(a, bob.id), (b, alice.id)] * 3
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await my_room_ids(client, a)) == 1


# --- channels and visibility ------------------------------------------------------------


async def test_anyone_finds_and_joins_a_channel_but_adds_only_themselves(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    channel = await create(client, a, kind="channel", name="general", topic="hi all")
    await create(client, a, name="secret group")
    listed = await client.get(CHANNELS, headers=b)
    assert listed.status_code == 200
    assert listed.json()["items"] == [{"id": channel["id"], "name": "general", "topic": "hi all"}]
    assert (await get_room(client, b, channel["id"])).status_code == 404

    for refused in [(carol,), (bob, carol)]:
        response = await add(client, b, channel["id"], *refused)
        assert response.status_code == 403, response.text
    joined = await add(client, b, channel["id"], bob)
    assert joined.status_code == 200, joined.text
    assert roles(joined.json()) == {"alice": "owner", "bob": "member"}
    assert joined.json()["my_role"] == "member"
    assert await my_room_ids(client, b) == [channel["id"]]
    assert (await get_room(client, b, channel["id"])).status_code == 200

    # A plain member still cannot add others.
    assert (await add(client, b, channel["id"], carol)).status_code == 403
    rejoined = await add(client, b, channel["id"], bob)
    assert rejoined.status_code == 200
    assert roles(rejoined.json()) == {"alice": "owner", "bob": "member"}


async def test_a_group_is_invisible_to_non_members(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, c = await alice.login(client), await carol.login(client)
    room_id = await group(client, a, bob)
    missing = 2**62
    for room in (room_id, missing):
        for response in [
            await get_room(client, c, room),
            await add(client, c, room, carol),
            await patch_room(client, c, room, name="mine now"),
            await client.get(f"{ROOMS}/{room}/messages", headers=c),
            await send(client, c, room, "hi"),
        ]:
            assert response.status_code == 404, response.text
    assert roles((await get_room(client, a, room_id)).json()) == {"alice": "owner", "bob": "member"}
    assert await my_room_ids(client, c) == []


async def test_a_stranger_cannot_tell_a_hidden_room_from_a_missing_one(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, c = await alice.login(client), await carol.login(client)
    room_id = await group(client, a, bob)
    for suffix in ("", "/messages"):
        hidden = await client.get(f"{ROOMS}/{room_id}{suffix}", headers=c)
        missing = await client.get(f"{ROOMS}/{room_id + 1000}{suffix}", headers=c)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json()
        assert error_of(hidden)["code"] == "not_found"


# --- changing rooms ---------------------------------------------------------------------


async def test_who_may_rename_retopic_and_archive(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    a, b, root = await alice.login(client), await bob.login(client), await admin.login(client)
    room_id = await group(client, a, bob)

    renamed = await patch_room(client, a, room_id, name="Renamed", topic="new topic")
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["topic"]) == ("Renamed", "new topic")

    refused = await patch_room(client, b, room_id, name="Bob's room")
    assert refused.status_code == 403
    assert (await get_room(client, b, room_id)).json()["name"] == "Renamed"
    # Only the owner hands out roles.
    assert (await set_role(client, b, room_id, bob, "moderator")).status_code == 403

    promoted = await set_role(client, a, room_id, bob, "moderator")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "moderator"
    assert promoted.json()["user"]["id"] == bob.id
    by_moderator = await patch_room(client, b, room_id, topic="moderated")
    assert by_moderator.status_code == 200, by_moderator.text
    assert by_moderator.json()["name"] == "Renamed"  # untouched fields stay
    assert by_moderator.json()["topic"] == "moderated"

    by_admin = await patch_room(client, root, room_id, name="Admin's pick", archived=True)
    assert by_admin.status_code == 200, by_admin.text
    seen = (await get_room(client, a, room_id)).json()
    assert (seen["name"], seen["topic"], seen["archived"]) == ("Admin's pick", "moderated", True)
    assert roles(seen) == {"alice": "owner", "bob": "moderator"}  # admin did not join

    cleared = await patch_room(client, a, room_id, topic=None)
    assert cleared.status_code == 200 and cleared.json()["topic"] is None
    empty_name = await patch_room(client, a, room_id, name="  ")
    assert empty_name.status_code == 422 and error_of(empty_name)["field"] == "name"


async def test_an_archived_room_takes_no_messages_or_members(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, b, c = await alice.login(client), await bob.login(client), await carol.login(client)
    channel = await create(client, a, kind="channel", name="old news", member_ids=[bob.id])
    assert (await send(client, b, channel["id"], "before")).status_code == 201
    archived = await patch_room(client, a, channel["id"], archived=True)
    assert archived.status_code == 200 and archived.json()["archived"] is True

    refused = await send(client, b, channel["id"], "after")
    assert refused.status_code == 409 and error_of(refused)["code"] == "room_archived"
    for joiner, headers in [(carol, a), (carol, c)]:
        response = await add(client, headers, channel["id"], joiner)
        assert response.status_code == 409 and error_of(response)["code"] == "room_archived"
    assert (await client.get(CHANNELS, headers=c)).json()["items"] == []

    history = await client.get(f"{ROOMS}/{channel['id']}/messages", headers=b)
    assert [m["content"] for m in history.json()["items"]] == ["before"]
    assert roles((await get_room(client, a, channel["id"])).json()) == {
        "alice": "owner",
        "bob": "member",
    }

    reopened = await patch_room(client, a, channel["id"], archived=False)
    assert reopened.json()["archived"] is False
    assert (await send(client, b, channel["id"], "after")).status_code == 201


async def test_a_direct_room_cannot_be_renamed(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    a = await alice.login(client)
    room = await create(client, a, kind="direct", member_ids=[bob.id])
    for headers in (a, await admin.login(client)):
        for body in ({"name": "us two"}, {"topic": "chat"}):
            response = await patch_room(client, headers, room["id"], **body)
            assert response.status_code == 422, response.text
            assert error_of(response)["field"] == "name"
    seen = (await get_room(client, a, room["id"])).json()
    assert (seen["name"], seen["topic"]) == (None, None)


# --- membership -------------------------------------------------------------------------


async def test_removing_and_leaving(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, b, c = await alice.login(client), await bob.login(client), await carol.login(client)
    room_id = await group(client, a, bob, carol)
    said = await send(client, c, room_id, "carol was here")
    assert said.status_code == 201
    assert (await set_role(client, a, room_id, bob, "moderator")).status_code == 200

    assert (await remove(client, b, room_id, alice)).status_code == 403  # moderator vs owner
    assert (await remove(client, c, room_id, bob)).status_code == 403  # plain member
    assert roles((await get_room(client, a, room_id)).json()) == {
        "alice": "owner",
        "bob": "moderator",
        "carol": "member",
    }

    assert (await remove(client, a, room_id, carol)).status_code == 204
    assert (await get_room(client, c, room_id)).status_code == 404
    assert (await client.get(f"{ROOMS}/{room_id}/messages", headers=c)).status_code == 404
    message_id = said.json()["id"]
    edit = await client.patch(f"/api/v1/messages/{message_id}", headers=c, json={"content": "x"})
    assert edit.status_code == 404
    assert await my_room_ids(client, c) == []

    assert (await remove(client, b, room_id, bob)).status_code == 204
    assert (await get_room(client, b, room_id)).status_code == 404
    assert (await client.get(f"{ROOMS}/{room_id}/messages", headers=b)).status_code == 404
    assert roles((await get_room(client, a, room_id)).json()) == {"alice": "owner"}
    # Gone is gone: removing them again finds nobody.
    assert (await remove(client, a, room_id, carol)).status_code == 404


async def test_a_moderator_removes_plain_members(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob, carol)
    await set_role(client, a, room_id, bob, "moderator")
    assert (await remove(client, b, room_id, carol)).status_code == 204
    assert roles((await get_room(client, a, room_id)).json()) == {
        "alice": "owner",
        "bob": "moderator",
    }


async def test_nobody_leaves_a_direct_room(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    a = await alice.login(client)
    room = await create(client, a, kind="direct", member_ids=[bob.id])
    for headers, user in [(a, alice), (a, bob), (await admin.login(client), bob)]:
        response = await remove(client, headers, room["id"], user)
        assert response.status_code == 422, response.text
    assert roles((await get_room(client, a, room["id"])).json()) == {
        "alice": "member",
        "bob": "member",
    }
    added = await add(client, a, room["id"], admin)
    assert added.status_code == 422
