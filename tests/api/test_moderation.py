"""Moderation and the console's overview: any message found and deleted with a reason;
rooms; the dashboard."""

from __future__ import annotations

import json

import httpx

from cmschat.context import AppContext
from tests.support import NamedUser, audit_events, error_of


async def test_admins_find_messages_anywhere_and_delete_with_a_reason(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, alice: NamedUser
) -> None:
    a = await alice.login(client)
    room = (
        await client.post(
            "/api/v1/rooms", json={"kind": "group", "name": "private", "member_ids": []}, headers=a
        )
    ).json()["id"]
    for text in ("회의록 공유합니다", "spam: cheap watches", "lunch?"):
        await client.post(f"/api/v1/rooms/{room}/messages", json={"content": text}, headers=a)
    headers = await admin.login(client)  # not a member of the room

    found = await client.get("/api/v1/admin/messages", params={"q": "회의"}, headers=headers)
    assert [m["content"] for m in found.json()["items"]] == ["회의록 공유합니다"]
    spam = (
        await client.get("/api/v1/admin/messages", params={"q": "spam"}, headers=headers)
    ).json()["items"][0]

    no_reason = await client.delete(f"/api/v1/admin/messages/{spam['id']}", headers=headers)
    assert no_reason.status_code == 422
    deleted = await client.delete(
        f"/api/v1/admin/messages/{spam['id']}", params={"reason": "advertising"}, headers=headers
    )
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    [event] = await audit_events(context.db, action="message.deleted")
    assert json.loads(event.changes)["reason"] == "advertising"
    assert event.actor_name == admin.username
    remaining = await client.get(
        "/api/v1/admin/messages", params={"room_id": room}, headers=headers
    )
    assert len(remaining.json()["items"]) == 2
    with_deleted = await client.get(
        "/api/v1/admin/messages", params={"room_id": room, "include_deleted": True}, headers=headers
    )
    assert len(with_deleted.json()["items"]) == 3


async def test_rooms_and_dashboard_for_admins_only(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser, agent: NamedUser
) -> None:
    a = await alice.login(client)
    room = (
        await client.post(
            "/api/v1/rooms",
            json={"kind": "group", "name": "ops", "member_ids": [bob.id]},
            headers=a,
        )
    ).json()["id"]
    await client.post(f"/api/v1/rooms/{room}/messages", json={"content": "hi"}, headers=a)
    headers = await admin.login(client)

    [listed] = (await client.get("/api/v1/admin/rooms", headers=headers)).json()["items"]
    assert (listed["name"], listed["member_count"], listed["legal_hold"]) == ("ops", 2, False)
    detail = (await client.get(f"/api/v1/admin/rooms/{room}", headers=headers)).json()
    assert {(m["user"]["username"], m["role"]) for m in detail["members"]} == {
        ("alice", "owner"),
        ("bob", "member"),
    }
    assert (await client.get("/api/v1/admin/rooms/999", headers=headers)).status_code == 404

    board = (await client.get("/api/v1/admin/dashboard", headers=headers)).json()
    assert (board["users_total"], board["rooms_total"], board["messages_today"]) == (4, 1, 1)
    assert board["audit"]["ok"] is True and board["audit"]["checked"] >= 1

    for user in (alice, agent):
        user_headers = await user.login(client)
        for path in (
            "/api/v1/admin/rooms",
            f"/api/v1/admin/rooms/{room}",
            "/api/v1/admin/dashboard",
            "/api/v1/admin/messages",
        ):
            response = await client.get(path, headers=user_headers)
            assert response.status_code == 403, (user.username, path)
            assert error_of(response)["code"] == "admin_required"
