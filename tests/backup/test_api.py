"""The console's backups API: admins list, back up and drill; nobody gets a key."""

from __future__ import annotations

import json
import os

import httpx
from prometheus_client import REGISTRY

from cmschat.backup.crypto import IDENTITY_NAME
from cmschat.context import AppContext
from tests.backup.conftest import Chat, configure_key
from tests.support import NamedUser, audit_events, error_of

URL = "/api/v1/admin/backups"


async def test_only_admins_reach_the_backups_page(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    member = await alice.login(client)
    for method, path in (("GET", URL), ("POST", URL), ("POST", f"{URL}/drill")):
        assert (await client.request(method, path, json={})).status_code == 401
        refused = await client.request(method, path, json={}, headers=member)
        assert refused.status_code == 403, (method, path)
        assert error_of(refused)["code"] == "admin_required"


async def test_an_admin_backs_up_and_drills_from_the_console(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, chat: Chat
) -> None:
    configure_key(context.settings)
    headers = await admin.login(client)
    await chat.say(2)
    assert (await client.post(URL, json={"kind": "weekly"}, headers=headers)).status_code == 422

    made = await client.post(URL, json={"kind": "full"}, headers=headers)
    assert made.status_code == 201, made.text
    backup_id = made.json()["id"]
    page = await client.get(URL, headers=headers)
    assert page.status_code == 200
    body = page.json()
    assert [item["id"] for item in body["items"]] == [backup_id]
    assert body["items"][0]["status"] == "complete" and body["last_drill"] is None
    assert body["schedule"]["timezone"] == "Asia/Seoul" and body["keep_days"] == 14

    drilled = await client.post(f"{URL}/drill", headers=headers)
    assert drilled.status_code == 201, drilled.text
    assert drilled.json()["ok"] is True and drilled.json()["backup_id"] == backup_id
    page = (await client.get(URL, headers=headers)).json()
    assert page["last_drill"]["backup_id"] == backup_id
    assert page["last_drill"]["rto_seconds"] >= 0

    # Audited as the admin who asked; made by a child process at the lowest priority,
    # so compression and encryption never hold this server's event loop.
    for action in ("backup.run", "backup.drill"):
        (event,) = await audit_events(context.db, action=action)
        assert event.actor == f"user:{admin.id}"
        process = json.loads(event.changes)["process"]
        assert process["pid"] != os.getpid()
        assert process["nice"] == 19 > os.getpriority(os.PRIO_PROCESS, 0)
        assert process["io"] == "idle"
    # The outcome counts in this instance's metrics.
    assert REGISTRY.get_sample_value("cmschat_backup_drill_success") == 1
    assert (
        REGISTRY.get_sample_value("cmschat_backup_last_success_timestamp_seconds", {"kind": "full"})
        or 0
    ) > 0
    # Nothing on the page can hand out the key.
    everything = made.text + drilled.text + json.dumps(page)
    assert "AGE-SECRET-KEY" not in everything and IDENTITY_NAME not in everything


async def test_a_backup_the_child_cannot_make_is_a_one_line_error(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, chat: Chat
) -> None:
    configure_key(context.settings)
    headers = await admin.login(client)
    # A setting the child process refuses (a server would not have started with it).
    context.settings.backup.keep_days = 0

    refused = await client.post(URL, json={"kind": "full"}, headers=headers)

    assert refused.status_code == 400, refused.text
    message = error_of(refused)["message"]
    assert "CMSCHAT_BACKUP__KEEP_DAYS" in message and "\n" not in message
    assert await audit_events(context.db, action="backup.run") == []
    page = (await client.get(URL, headers=headers)).json()
    assert page["items"] == []
