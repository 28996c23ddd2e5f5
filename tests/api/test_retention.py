"""The console's retention API: who may use it, what it refuses, and what it shows."""

from __future__ import annotations

import httpx

from cmschat.context import AppContext
from tests.support import NamedUser, audit_events, error_of

RETENTION = "/api/v1/admin/retention"


async def test_only_admins_manage_retention(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, agent: NamedUser
) -> None:
    calls = [
        ("GET", RETENTION, None),
        ("GET", f"{RETENTION}/preview", None),
        ("POST", f"{RETENTION}/preview", {}),
        ("PUT", f"{RETENTION}/defaults", {"message_days": 1, "attachment_days": 1}),
        ("PUT", f"{RETENTION}/rooms/1", {"legal_hold": True}),
        ("DELETE", f"{RETENTION}/rooms/1", None),
    ]
    for method, path, body in calls:
        assert (await client.request(method, path, json=body)).status_code == 401
        for user in (alice, agent):
            response = await client.request(
                method, path, json=body, headers=await user.login(client)
            )
            assert response.status_code == 403, (method, path)


async def test_policies_round_trip_and_show_what_applies(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    shown = (await client.get(RETENTION, headers=headers)).json()
    assert shown["defaults"] == {
        "message_days": None,
        "attachment_days": None,
        "source": "settings",
    }
    assert shown["schedule"]["audit_days"] == 400

    room = await client.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "legal", "member_ids": []},
        headers=await alice.login(client),
    )
    room_id = room.json()["id"]
    await client.put(
        f"{RETENTION}/defaults", json={"message_days": 365, "attachment_days": 90}, headers=headers
    )
    put = await client.put(
        f"{RETENTION}/rooms/{room_id}",
        json={"attachment_days": None, "legal_hold": True, "legal_hold_reason": "audit 2026"},
        headers=headers,
    )
    assert put.status_code == 200
    [policy] = (await client.get(RETENTION, headers=headers)).json()["rooms"]
    assert policy == {
        "room_id": room_id,
        "room_name": "legal",
        "message_days": "inherit",
        "attachment_days": None,
        "legal_hold": True,
        "legal_hold_reason": "audit 2026",
        "effective_message_days": 365,
        "effective_attachment_days": None,
    }
    [changed] = await audit_events(context.db, action="retention.defaults_changed")
    assert changed.actor_name == admin.username


async def test_bad_policies_are_refused_with_a_reason(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    for body in (
        {"message_days": 0, "attachment_days": None},
        {"message_days": 36501, "attachment_days": None},
        {"message_days": 30},
        {"message_days": 30, "attachment_days": None, "extra": 1},
    ):
        response = await client.put(f"{RETENTION}/defaults", json=body, headers=headers)
        assert response.status_code == 422, body
        assert error_of(response)["message"]
    missing = await client.put(f"{RETENTION}/rooms/999", json={}, headers=headers)
    assert missing.status_code == 404
    assert (await client.delete(f"{RETENTION}/rooms/999", headers=headers)).status_code == 404
    preview = await client.post(
        f"{RETENTION}/preview", json={"rooms": [{"room_id": 999}]}, headers=headers
    )
    assert preview.status_code == 404
