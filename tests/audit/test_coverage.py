"""Every mutating operation of the API, and every admin read of private data, is audited.

The scenario below performs each POST/PATCH/PUT/DELETE of the OpenAPI spec once, with
input that succeeds. A new mutating route makes this test fail until it is added here,
and fails it again if its change is not audited. The few operations exempt from the
trail are listed in ``NOT_AUDITED`` with the reason, and must then write no event at all
(an exemption is a decision, not a hole). Admin GET routes are declared sensitive (each
read must leave an event) or not, with the reason; an undeclared one fails.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from cmschat.audit import service as audit
from cmschat.context import AppContext
from tests.api.test_attachments import multipart
from tests.backup.conftest import configure_key
from tests.support import PASSWORD, NamedUser, audit_events

MUTATING = {"post", "put", "patch", "delete"}
V1 = "/api/v1"


@dataclass
class Scenario:
    """The users and what the steps created, shared from step to step."""

    client: httpx.AsyncClient
    admin: dict[str, str]
    alice: dict[str, str]
    alice_id: int
    bob_id: int
    ids: dict[str, Any] = field(default_factory=dict)


Step = Callable[[Scenario], Awaitable[httpx.Response]]


async def login(s: Scenario) -> httpx.Response:
    response = await s.client.post(
        f"{V1}/auth/login", json={"username": "bob", "password": PASSWORD}
    )
    s.ids["bob_headers"] = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return response


async def create_user(s: Scenario) -> httpx.Response:
    response = await s.client.post(
        f"{V1}/admin/users",
        json={"username": "carol", "password": "Wintry-lantern-12345", "role": "member"},
        headers=s.admin,
    )
    s.ids["carol"] = response.json()["id"]
    return response


async def update_user(s: Scenario) -> httpx.Response:
    return await s.client.patch(
        f"{V1}/admin/users/{s.ids['carol']}", json={"display_name": "Carol C."}, headers=s.admin
    )


async def reset_password(s: Scenario) -> httpx.Response:
    return await s.client.post(
        f"{V1}/admin/users/{s.ids['carol']}/password", json={}, headers=s.admin
    )


async def create_room(s: Scenario) -> httpx.Response:
    response = await s.client.post(
        f"{V1}/rooms", json={"kind": "group", "name": "audit", "member_ids": []}, headers=s.alice
    )
    s.ids["room"] = response.json()["id"]
    return response


async def update_room(s: Scenario) -> httpx.Response:
    return await s.client.patch(
        f"{V1}/rooms/{s.ids['room']}", json={"topic": "audited"}, headers=s.alice
    )


async def add_member(s: Scenario) -> httpx.Response:
    return await s.client.post(
        f"{V1}/rooms/{s.ids['room']}/members", json={"user_ids": [s.bob_id]}, headers=s.alice
    )


async def set_member_role(s: Scenario) -> httpx.Response:
    return await s.client.patch(
        f"{V1}/rooms/{s.ids['room']}/members/{s.bob_id}",
        json={"role": "moderator"},
        headers=s.alice,
    )


async def upload(s: Scenario) -> httpx.Response:
    body, content_type = multipart("notes.txt", b"meeting notes\n")
    response = await s.client.post(
        f"{V1}/rooms/{s.ids['room']}/attachments",
        content=body,
        headers=s.alice | {"Content-Type": content_type},
    )
    s.ids["file"] = response.json()["id"]
    return response


async def send(s: Scenario) -> httpx.Response:
    response = await s.client.post(
        f"{V1}/rooms/{s.ids['room']}/messages",
        json={"content": "hello", "attachment_ids": [s.ids["file"]]},
        headers=s.alice,
    )
    s.ids["message"] = response.json()["id"]
    return response


async def edit(s: Scenario) -> httpx.Response:
    return await s.client.patch(
        f"{V1}/messages/{s.ids['message']}", json={"content": "hello!"}, headers=s.alice
    )


async def mark_read(s: Scenario) -> httpx.Response:
    return await s.client.post(
        f"{V1}/rooms/{s.ids['room']}/read",
        json={"message_id": s.ids["message"]},
        headers=s.ids["bob_headers"],
    )


async def delete_message(s: Scenario) -> httpx.Response:
    return await s.client.delete(f"{V1}/messages/{s.ids['message']}", headers=s.alice)


async def remove_member(s: Scenario) -> httpx.Response:
    return await s.client.delete(f"{V1}/rooms/{s.ids['room']}/members/{s.bob_id}", headers=s.alice)


async def change_password(s: Scenario) -> httpx.Response:
    return await s.client.post(
        f"{V1}/me/password",
        json={"current_password": PASSWORD, "new_password": "Quiet-harbour-2026"},
        headers=s.ids["bob_headers"],
    )


async def logout(s: Scenario) -> httpx.Response:
    return await s.client.post(f"{V1}/auth/logout", headers=s.ids["bob_headers"])


async def put_retention_defaults(s: Scenario) -> httpx.Response:
    return await s.client.put(
        f"{V1}/admin/retention/defaults",
        json={"message_days": 365, "attachment_days": 90},
        headers=s.admin,
    )


async def put_room_retention(s: Scenario) -> httpx.Response:
    return await s.client.put(
        f"{V1}/admin/retention/rooms/{s.ids['room']}",
        json={"message_days": 30, "legal_hold": True},
        headers=s.admin,
    )


async def preview_retention(s: Scenario) -> httpx.Response:
    return await s.client.post(
        f"{V1}/admin/retention/preview", json={"defaults": {"message_days": 1}}, headers=s.admin
    )


async def delete_room_retention(s: Scenario) -> httpx.Response:
    return await s.client.delete(f"{V1}/admin/retention/rooms/{s.ids['room']}", headers=s.admin)


async def create_notice(s: Scenario) -> httpx.Response:
    response = await s.client.post(
        f"{V1}/admin/notices",
        json={"title": "Maintenance", "body_html": "<p>Sunday</p>"},
        headers=s.admin,
    )
    s.ids["notice"] = response.json()["id"]
    return response


async def update_notice(s: Scenario) -> httpx.Response:
    return await s.client.patch(
        f"{V1}/admin/notices/{s.ids['notice']}",
        json={"title": "Maintenance window"},
        headers=s.admin,
    )


async def publish_notice(s: Scenario) -> httpx.Response:
    return await s.client.post(f"{V1}/admin/notices/{s.ids['notice']}/publish", headers=s.admin)


async def unpublish_notice(s: Scenario) -> httpx.Response:
    return await s.client.post(f"{V1}/admin/notices/{s.ids['notice']}/unpublish", headers=s.admin)


async def delete_notice(s: Scenario) -> httpx.Response:
    return await s.client.delete(f"{V1}/admin/notices/{s.ids['notice']}", headers=s.admin)


async def create_canned_reply(s: Scenario) -> httpx.Response:
    response = await s.client.post(
        f"{V1}/admin/canned-replies",
        json={"shortcut": "hello", "title": "Greeting", "body": "Hello! How can I help?"},
        headers=s.admin,
    )
    s.ids["reply"] = response.json()["id"]
    return response


async def update_canned_reply(s: Scenario) -> httpx.Response:
    return await s.client.patch(
        f"{V1}/admin/canned-replies/{s.ids['reply']}", json={"title": "Hello"}, headers=s.admin
    )


async def delete_canned_reply(s: Scenario) -> httpx.Response:
    return await s.client.delete(f"{V1}/admin/canned-replies/{s.ids['reply']}", headers=s.admin)


async def start_backup(s: Scenario) -> httpx.Response:
    return await s.client.post(f"{V1}/admin/backups", json={"kind": "full"}, headers=s.admin)


async def start_drill(s: Scenario) -> httpx.Response:
    return await s.client.post(f"{V1}/admin/backups/drill", headers=s.admin)


async def moderate(s: Scenario) -> httpx.Response:
    return await s.client.delete(
        f"{V1}/admin/messages/{s.ids['spam']}", params={"reason": "spam"}, headers=s.admin
    )


# In the order they run: later steps use what earlier ones made.
STEPS: dict[tuple[str, str], Step] = {
    ("post", "/auth/login"): login,
    ("post", "/admin/users"): create_user,
    ("patch", "/admin/users/{user_id}"): update_user,
    ("post", "/admin/users/{user_id}/password"): reset_password,
    ("post", "/rooms"): create_room,
    ("patch", "/rooms/{room_id}"): update_room,
    ("post", "/rooms/{room_id}/members"): add_member,
    ("patch", "/rooms/{room_id}/members/{user_id}"): set_member_role,
    ("post", "/rooms/{room_id}/attachments"): upload,
    ("post", "/rooms/{room_id}/messages"): send,
    ("patch", "/messages/{message_id}"): edit,
    ("post", "/rooms/{room_id}/read"): mark_read,
    ("delete", "/messages/{message_id}"): delete_message,
    ("delete", "/rooms/{room_id}/members/{user_id}"): remove_member,
    ("post", "/me/password"): change_password,
    ("post", "/auth/logout"): logout,
    ("put", "/admin/retention/defaults"): put_retention_defaults,
    ("put", "/admin/retention/rooms/{room_id}"): put_room_retention,
    ("post", "/admin/retention/preview"): preview_retention,
    ("delete", "/admin/retention/rooms/{room_id}"): delete_room_retention,
    ("post", "/admin/notices"): create_notice,
    ("patch", "/admin/notices/{notice_id}"): update_notice,
    ("post", "/admin/notices/{notice_id}/publish"): publish_notice,
    ("post", "/admin/notices/{notice_id}/unpublish"): unpublish_notice,
    ("delete", "/admin/notices/{notice_id}"): delete_notice,
    ("post", "/admin/canned-replies"): create_canned_reply,
    ("patch", "/admin/canned-replies/{reply_id}"): update_canned_reply,
    ("delete", "/admin/canned-replies/{reply_id}"): delete_canned_reply,
    ("delete", "/admin/messages/{message_id}"): moderate,
    ("post", "/admin/backups"): start_backup,
    ("post", "/admin/backups/drill"): start_drill,
}


# Mutating operations deliberately kept out of the audit trail, and why. Each still runs
# in the scenario, and must leave no event (so the trail keeps its signal).
NOT_AUDITED: dict[tuple[str, str], str] = {
    ("post", "/rooms/{room_id}/read"): (
        "the reader's own bookmark: it changes no one's data and moves on every message "
        "read, so it would drown the changes an investigator looks for"
    ),
}


def mutating_operations(app: FastAPI) -> set[tuple[str, str]]:
    spec = app.openapi()
    return {
        (method, path.removeprefix(V1))
        for path, operations in spec["paths"].items()
        for method in operations
        if method in MUTATING
    }


async def test_every_mutating_operation_leaves_an_audit_event(
    app: FastAPI,
    client: httpx.AsyncClient,
    context: AppContext,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    assert mutating_operations(app) == set(STEPS), "add the new operation to STEPS"
    configure_key(context.settings)  # backups on MariaDB need a configured key
    scenario = Scenario(
        client=client,
        admin=await admin.login(client),
        alice=await alice.login(client),
        alice_id=alice.id,
        bob_id=bob.id,
    )
    # Made before anything is counted: the message the moderation step deletes.
    spam_room = await client.post(
        f"{V1}/rooms",
        json={"kind": "group", "name": "spam", "member_ids": []},
        headers=scenario.alice,
    )
    spam = await client.post(
        f"{V1}/rooms/{spam_room.json()['id']}/messages",
        json={"content": "buy now"},
        headers=scenario.alice,
    )
    scenario.ids["spam"] = spam.json()["id"]
    assert set(NOT_AUDITED) <= set(STEPS), "remove exemptions of routes that no longer exist"
    silent, noisy = [], []
    for operation, step in STEPS.items():
        before = len(await audit_events(context.db))
        response = await step(scenario)
        assert response.is_success, (operation, response.text)
        written = len(await audit_events(context.db)) - before
        if operation in NOT_AUDITED and written:
            noisy.append(operation)
        elif operation not in NOT_AUDITED and not written:
            silent.append(operation)
    assert silent == [], f"these operations changed data without an audit event: {silent}"
    assert noisy == [], f"these operations are exempt (NOT_AUDITED) yet wrote events: {noisy}"


# --- reads of private data -------------------------------------------------------------

# Admin reads that show private data: each must leave an event naming reader and filter.
SENSITIVE_READS: dict[str, dict[str, Any]] = {
    "/admin/messages": {"q": "quarterly numbers", "include_deleted": "true"},
    "/admin/users/{user_id}": {},
    "/admin/rooms/{room_id}": {},
    "/admin/audit": {"action": "message.*"},
    "/admin/audit/export": {"action": "auth.*"},
}
# Admin reads that show no one's private data, and why; a new admin GET must go in one list.
NOT_SENSITIVE_READS = {
    "/admin/users": "the account directory (names, roles), which members see too via /users",
    "/admin/rooms": "room names, kinds and counts: no messages and no member lists",
    "/admin/dashboard": "totals only",
    "/admin/audit/verify": "whether the chain is intact, with no event's content",
    "/admin/retention": "the retention policy",
    "/admin/retention/preview": "how many messages a policy would remove, per room",
    "/admin/notices": "the organisation's own announcements",
    "/admin/notices/{notice_id}": "the organisation's own announcements",
    "/admin/canned-replies": "the organisation's own reply templates",
    "/admin/backups": "backup ids, sizes and drill results: no chat data and no keys",
    "/admin/monitoring": "per-minute totals, instance health and alert names: no chat data",
}


def admin_reads(app: FastAPI) -> set[str]:
    spec = app.openapi()
    return {
        path.removeprefix(V1)
        for path, operations in spec["paths"].items()
        if path.startswith(f"{V1}/admin") and "get" in operations
    }


def test_every_admin_read_is_declared_sensitive_or_not(app: FastAPI) -> None:
    declared = set(SENSITIVE_READS) | set(NOT_SENSITIVE_READS)
    assert not set(SENSITIVE_READS) & set(NOT_SENSITIVE_READS)
    assert admin_reads(app) - declared == set(), (
        "a new admin GET: add it to SENSITIVE_READS (and audit it) or to NOT_SENSITIVE_READS"
    )
    assert declared - admin_reads(app) == set(), "remove routes that no longer exist"


async def test_every_sensitive_read_leaves_an_audit_event(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, alice: NamedUser
) -> None:
    admin_headers, alice_headers = await admin.login(client), await alice.login(client)
    room = await client.post(
        f"{V1}/rooms",
        json={"kind": "group", "name": "finance", "member_ids": []},
        headers=alice_headers,
    )
    room_id = room.json()["id"]
    sent = await client.post(
        f"{V1}/rooms/{room_id}/messages",
        json={"content": "the quarterly numbers are in"},
        headers=alice_headers,
    )
    ids = {"user_id": alice.id, "room_id": room_id}
    silent = []
    for path, params in SENSITIVE_READS.items():
        before = len(await audit_events(context.db))
        response = await client.get(V1 + path.format(**ids), params=params, headers=admin_headers)
        assert response.is_success, (path, response.text)
        events = (await audit_events(context.db))[before:]
        if not [e for e in events if e.actor_id == admin.id]:
            silent.append(path)
    assert silent == [], f"these reads of private data left no audit event: {silent}"

    # What the trail says: the reader, what was read, the filter (search text as a digest).
    by_action = {e.action: e for e in await audit_events(context.db, actor_id=admin.id)}
    search = json.loads(by_action["message.searched"].changes)
    assert search["query"] == audit.text_digest("quarterly numbers")
    assert search["include_deleted"] is True
    assert search["message_ids"] == [sent.json()["id"]]
    assert "quarterly" not in by_action["message.searched"].changes
    assert by_action["user.viewed"].target_id == str(alice.id)
    assert by_action["room.viewed"].target_id == str(room_id)
    assert json.loads(by_action["audit.viewed"].changes)["action"] == "message.*"
    assert json.loads(by_action["audit.exported"].changes)["action"] == "auth.*"
    in_room = await client.get(
        f"{V1}/admin/messages", params={"room_id": room_id}, headers=admin_headers
    )
    assert in_room.status_code == 200
    [room_read] = await audit_events(context.db, action="message.searched", target_id=str(room_id))
    assert room_read.target_type == "room"
