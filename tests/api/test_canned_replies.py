"""Canned replies: admins manage them, agents read them, members see nothing."""

from __future__ import annotations

import httpx

from tests.support import NamedUser, error_of

PATH = "/api/v1/admin/canned-replies"


async def test_admins_manage_agents_read_members_are_refused(
    client: httpx.AsyncClient, admin: NamedUser, agent: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    created = await client.post(
        PATH,
        json={
            "shortcut": "refund",
            "title": "환불 안내",
            "body": "환불은 **3일** 안에 처리됩니다.",
        },
        headers=headers,
    )
    assert created.status_code == 201
    reply_id = created.json()["id"]
    await client.post(
        PATH, json={"shortcut": "hello", "title": "Hello", "body": "Hi!"}, headers=headers
    )

    agent_headers = await agent.login(client)
    listed = await client.get(PATH, headers=agent_headers)
    assert [r["shortcut"] for r in listed.json()["items"]] == ["hello", "refund"]
    prefixed = await client.get(PATH, params={"q": "re"}, headers=agent_headers)
    assert [r["shortcut"] for r in prefixed.json()["items"]] == ["refund"]
    for method, path, body in (
        ("POST", PATH, {"shortcut": "x", "title": "x", "body": "x"}),
        ("PATCH", f"{PATH}/{reply_id}", {"title": "y"}),
        ("DELETE", f"{PATH}/{reply_id}", None),
    ):
        response = await client.request(method, path, json=body, headers=agent_headers)
        assert response.status_code == 403, (method, path)

    member = await alice.login(client)
    refused = await client.get(PATH, headers=member)
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "staff_required"


async def test_shortcuts_are_unique_and_well_formed(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    body = {"shortcut": "hello", "title": "Hello", "body": "Hi!"}
    assert (await client.post(PATH, json=body, headers=headers)).status_code == 201
    taken = await client.post(PATH, json=body, headers=headers)
    assert taken.status_code == 409
    assert error_of(taken)["code"] == "shortcut_taken"
    for shortcut in ("Hello", "with space", "", "/slash"):
        response = await client.post(PATH, json={**body, "shortcut": shortcut}, headers=headers)
        assert response.status_code == 422, shortcut
    other = await client.post(
        PATH, json={"shortcut": "bye", "title": "Bye", "body": "Bye!"}, headers=headers
    )
    clash = await client.patch(
        f"{PATH}/{other.json()['id']}", json={"shortcut": "hello"}, headers=headers
    )
    assert clash.status_code == 409
    missing = await client.patch(f"{PATH}/999", json={"title": "x"}, headers=headers)
    assert missing.status_code == 404
