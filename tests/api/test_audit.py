"""The console's audit API: who may read it, filters, pages, CSV export and verify."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx
from sqlalchemy import text

from cmschat.audit import service as audit
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from tests.support import NamedUser, error_of

AUDIT = "/api/v1/admin/audit"


async def test_only_admins_read_the_trail(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, agent: NamedUser
) -> None:
    for path in (AUDIT, f"{AUDIT}/export", f"{AUDIT}/verify"):
        assert (await client.get(path)).status_code == 401
        for user in (alice, agent):
            response = await client.get(path, headers=await user.login(client))
            assert response.status_code == 403, path
            assert error_of(response)["code"] == "admin_required"
    assert (await client.get(AUDIT, headers=await admin.login(client))).status_code == 200


async def test_filters_and_pages_newest_first(
    client: httpx.AsyncClient,
    context: AppContext,
    clock: FakeClock,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    headers = await admin.login(client)
    start = clock.now()
    clock.advance(hours=1)
    for user, role in ((alice, "agent"), (bob, "agent"), (alice, "member")):
        response = await client.patch(
            f"/api/v1/admin/users/{user.id}", json={"role": role}, headers=headers
        )
        assert response.status_code == 200
        clock.advance(minutes=5)

    page = (await client.get(AUDIT, params={"action": "user.role_changed"}, headers=headers)).json()
    assert [(e["target_id"], e["changes"]["role"]) for e in page["items"]] == [
        (str(alice.id), ["agent", "member"]),
        (str(bob.id), ["member", "agent"]),
        (str(alice.id), ["member", "agent"]),
    ]
    by_target = await client.get(
        AUDIT, params={"target_type": "user", "target_id": str(bob.id)}, headers=headers
    )
    assert {e["action"] for e in by_target.json()["items"]} == {"user.created", "user.role_changed"}
    by_actor = await client.get(AUDIT, params={"actor": admin.username}, headers=headers)
    assert {e["action"] for e in by_actor.json()["items"]} == {
        "auth.login",
        "user.role_changed",
        "audit.viewed",  # reading the trail is itself recorded
    }
    prefixed = await client.get(AUDIT, params={"action": "auth.*"}, headers=headers)
    assert {e["action"] for e in prefixed.json()["items"]} == {"auth.login"}
    window = await client.get(
        AUDIT,
        params={
            "since": (start + timedelta(minutes=61)).isoformat(),
            "until": (start + timedelta(minutes=70)).isoformat(),
        },
        headers=headers,
    )
    assert [e["target_id"] for e in window.json()["items"]] == [str(bob.id)]

    # Each page read appends an "audit.viewed" event on top; the pages below stay stable.
    all_ids = [e["id"] for e in (await client.get(AUDIT, headers=headers)).json()["items"]]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await client.get(AUDIT, params=params, headers=headers)).json()
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen), reverse=True)
    assert [i for i in seen if i <= all_ids[0]] == all_ids


async def test_bad_filters_are_a_clear_4xx(client: httpx.AsyncClient, admin: NamedUser) -> None:
    headers = await admin.login(client)
    for params in ({"since": "2026-01-01T00:00:00"}, {"cursor": "bogus"}, {"limit": 0}):
        response = await client.get(AUDIT, params=params, headers=headers)
        assert response.status_code == 422, params
        assert error_of(response)["message"]


async def test_csv_export_escapes_formulas_and_is_itself_audited(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        audit.record(session, action="test.formula", target_type="thing", target_id="=1+2")
    response = await client.get(f"{AUDIT}/export", headers={**headers, "X-Request-ID": "r-2-3"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    [formula] = [r for r in rows if r["action"] == "test.formula"]
    assert formula["target_id"] == "'=1+2"
    # Oldest first; the export's own event is committed before the file streams.
    assert [r["action"] for r in rows] == [
        "user.created",
        "auth.login",
        "test.formula",
        "audit.exported",
    ]

    [exported] = (
        await client.get(AUDIT, params={"action": "audit.exported"}, headers=headers)
    ).json()["items"]
    # The request id is the server's own; the caller's sits beside it in the details.
    assert exported["request_id"] == response.headers["X-Request-ID"]
    assert exported["changes"]["client_request_id"] == "r-2-3"
    later = await client.get(f"{AUDIT}/export", headers=headers)
    exports = [
        r for r in csv.DictReader(io.StringIO(later.text)) if r["action"] == "audit.exported"
    ]
    assert exports[0]["request_id"] == exported["request_id"]
    assert len(exports) == 2


async def test_verify_endpoint_reports_tampering(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    intact = (await client.get(f"{AUDIT}/verify", headers=headers)).json()
    assert intact["ok"] is True and intact["checked"] == intact["head_id"] >= 1

    async with context.db.engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER audit_events_refuse_update"))
        await connection.execute(
            text("UPDATE audit_events SET actor_name = 'someone' WHERE id = 1")
        )
    try:
        broken = (await client.get(f"{AUDIT}/verify", headers=headers)).json()
        assert broken["ok"] is False
        assert broken["first_bad_id"] == 1
        assert "altered" in broken["message"]
    finally:
        await _restore_update_trigger(context)


async def _restore_update_trigger(context: AppContext) -> None:
    """The MariaDB test database is shared by the run: put the trigger back."""
    async with context.db.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.execute(
                text(
                    "CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events"
                    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
                )
            )
        else:
            await connection.execute(
                text(
                    "CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events"
                    " FOR EACH ROW SIGNAL SQLSTATE '45000'"
                    " SET MESSAGE_TEXT = 'audit_events is append-only'"
                )
            )
