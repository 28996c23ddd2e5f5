"""The audit trail: what is recorded, in which transaction, and what never is."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from cmschat.audit import chain, head
from cmschat.audit import service as audit
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.session import Database, create_engine
from cmschat.observability.metrics import render
from cmschat.settings import Settings
from tests.realtime.test_gateway import make_room, post
from tests.realtime.wsclient import serve_app, token_of, ws_client
from tests.support import NamedUser, audit_events


async def test_admin_change_is_recorded_with_actor_request_and_address(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    headers["X-Request-ID"] = "req-role-change-1"
    response = await client.patch(
        f"/api/v1/admin/users/{alice.id}", json={"role": "agent"}, headers=headers
    )
    assert response.status_code == 200, response.text

    [event] = await audit_events(context.db, action="user.role_changed")
    assert (event.actor, event.actor_id, event.actor_name) == (
        f"user:{admin.id}",
        admin.id,
        admin.username,
    )
    assert (event.target_type, event.target_id) == ("user", str(alice.id))
    assert json.loads(event.changes) == {
        "role": ["member", "agent"],
        "client_request_id": "req-role-change-1",  # the caller's, beside ours
    }
    assert event.request_id == response.headers["X-Request-ID"]
    assert event.client_address == "203.0.113.7"
    assert event.occurred_at == context.clock.now()


async def test_failed_login_is_recorded_without_the_password(
    client: httpx.AsyncClient, context: AppContext, alice: NamedUser
) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "Wrong-guess-123"}
    )
    assert response.status_code == 401

    [event] = await audit_events(context.db, action="auth.login_failed")
    assert event.actor == "system:anonymous"
    assert json.loads(event.changes) == {"username": "alice", "reason": "bad_credentials"}
    assert "Wrong-guess" not in event.changes


async def test_secrets_and_message_text_never_reach_the_trail(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, alice: NamedUser
) -> None:
    admin_headers = await admin.login(client)
    secret_password = "Very-Secret-Pass-42"
    created = await client.post(
        "/api/v1/admin/users",
        json={"username": "carol", "password": secret_password, "role": "member"},
        headers=admin_headers,
    )
    assert created.status_code == 201
    login = await client.post(
        "/api/v1/auth/login", json={"username": "carol", "password": secret_password}
    )
    token = login.json()["access_token"]
    carol = {"Authorization": f"Bearer {token}"}
    room = await client.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "ops", "member_ids": [alice.id]},
        headers=carol,
    )
    room_id = room.json()["id"]
    body = "the vault code is 9931-alpha"
    sent = await client.post(
        f"/api/v1/rooms/{room_id}/messages", json={"content": body}, headers=carol
    )
    message_id = sent.json()["id"]
    edited = await client.patch(
        f"/api/v1/messages/{message_id}", json={"content": body + " (edited)"}, headers=carol
    )
    assert edited.status_code == 200
    assert (await client.delete(f"/api/v1/messages/{message_id}", headers=carol)).status_code == 200

    events = await audit_events(context.db)
    trail = " ".join(e.changes + e.target_id.__str__() for e in events)
    for secret in (secret_password, token, "9931-alpha", "$2b$"):
        assert secret not in trail
    [created_event] = [e for e in events if e.action == "message.created"]
    assert json.loads(created_event.changes)["content"] == audit.text_digest(body)
    assert [e.action for e in events if e.action.startswith("message.")] == [
        "message.created",
        "message.edited",
        "message.deleted",
    ]


async def test_a_rolled_back_change_leaves_no_event(context: AppContext) -> None:
    with pytest.raises(RuntimeError):
        async with context.db.unit_of_work(SYSTEM_CLI) as session:
            audit.record(session, action="test.thing", target_type="thing", target_id=1)
            await session.flush()
            raise RuntimeError("the change failed")
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        audit.record(session, action="test.other", target_type="thing", target_id=2)

    assert [e.action for e in await audit_events(context.db)] == ["test.other"]


async def test_triggers_refuse_update_and_delete(context: AppContext) -> None:
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        audit.record(session, action="test.thing", target_type="thing")
    for statement in (
        "UPDATE audit_events SET action = 'test.hidden'",
        "DELETE FROM audit_events",
    ):
        with pytest.raises(Exception, match="append-only"):
            async with context.db.unit_of_work(SYSTEM_CLI) as session:
                await session.execute(text(statement))
    [event] = await audit_events(context.db)
    assert event.action == "test.thing"


async def test_writers_on_two_instances_build_one_unbroken_chain(
    database_url: str, clock: FakeClock
) -> None:
    """Two engines stand for two app instances; every append must still take its turn."""
    instances = [audited(Database(create_engine(database_url), clock)) for _ in range(2)]

    async def write(db: Database, n: int) -> None:
        async with db.unit_of_work(SYSTEM_CLI) as session:
            audit.record(session, action="test.write", target_type="thing", target_id=n)
            audit.record(session, action="test.write.second", target_type="thing", target_id=n)

    try:
        await asyncio.gather(*(write(instances[n % 2], n) for n in range(30)))
        async with instances[0].unit_of_work(SYSTEM_CLI) as session:
            verdict = await chain.verify(session)
        events = await audit_events(instances[0])
    finally:
        for db in instances:
            await db.dispose()
    assert verdict.ok, verdict.describe()
    assert verdict.checked == verdict.head_id == 60
    assert [e.id for e in events] == list(range(1, 61))
    # Both events of one transaction sit next to each other in the chain.
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert (first.target_id, second.action) == (second.target_id, "test.write.second")


async def test_head_is_exported_as_metrics_and_a_log_line(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: NamedUser,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    await admin.login(client)
    [*_, last] = await audit_events(context.db)
    metrics = {
        sample.name: sample.value
        for family in text_string_to_metric_families(render(include_sensitive=True).decode())
        for sample in family.samples
    }
    assert metrics["cmschat_audit_head_id"] == last.id
    assert metrics["cmschat_audit_head_hash_prefix"] == int(last.hash[:13], 16)

    head.log_head(force=True)
    assert any(
        getattr(r, "audit.head.hash", None) == last.hash and last.hash in r.getMessage()
        for r in all_logs.records
    )


async def test_a_rolled_back_savepoint_drops_only_its_own_events(context: AppContext) -> None:
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        audit.record(session, action="test.kept", target_type="thing")
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                audit.record(session, action="test.undone", target_type="thing")
                raise RuntimeError("the inner change failed")
        async with session.begin_nested():
            audit.record(session, action="test.inner_kept", target_type="thing")

    assert [e.action for e in await audit_events(context.db)] == ["test.kept", "test.inner_kept"]


async def test_a_released_savepoint_chains_and_exports_nothing_before_the_real_commit(
    context: AppContext,
) -> None:
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        audit.record(session, action="test.before", target_type="thing")
    exported = REGISTRY.get_sample_value("cmschat_audit_head_id")
    stored = len(await audit_events(context.db))
    with pytest.raises(RuntimeError):
        async with context.db.unit_of_work(SYSTEM_CLI) as session:
            audit.record(session, action="test.outer", target_type="thing")
            async with session.begin_nested():  # as a send with a client_id does
                audit.record(session, action="test.inner", target_type="thing")
            # Released, not committed: an exported head now could name an event that the
            # rollback below takes away, and verification would cry tampering.
            assert REGISTRY.get_sample_value("cmschat_audit_head_id") == exported
            raise RuntimeError("the outer change failed at the last step")
    assert REGISTRY.get_sample_value("cmschat_audit_head_id") == exported
    assert len(await audit_events(context.db)) == stored
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        audit.record(session, action="test.outer", target_type="thing")
        async with session.begin_nested():
            audit.record(session, action="test.inner", target_type="thing")
    actions = [e.action for e in await audit_events(context.db)]
    assert actions[-2:] == ["test.outer", "test.inner"]
    assert REGISTRY.get_sample_value("cmschat_audit_head_id") == exported + 2


async def test_reading_a_busy_room_leaves_the_trail_to_real_changes(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    """Read markers move on every message read, over HTTP and the WebSocket: no events."""
    async with serve_app(settings, clock) as (live, http):
        context: AppContext = live.app.state.context
        a, b = await alice.login(http), await bob.login(http)
        room = await make_room(http, a, bob)
        sent = [await post(http, a, room, f"budget line {n}") for n in range(3)]
        before = [e.action for e in await audit_events(context.db)]

        read = await http.post(
            f"/api/v1/rooms/{room}/read", json={"message_id": sent[0]["id"]}, headers=b
        )
        assert read.json()["last_read_seq"] == sent[0]["seq"]  # the marker did move
        async with ws_client(live, token_of(b)) as ws:
            for message in sent[1:]:
                await ws.send({"type": "read", "room_id": room, "message_id": message["id"]})
                frames = await ws.recv_until(lambda f: f["type"] == "read")
                assert frames[-1]["last_read_seq"] == message["seq"]

        assert [e.action for e in await audit_events(context.db)] == before
        assert before.count("message.created") == 3
        async with context.db.unit_of_work(SYSTEM_CLI) as session:
            assert (await chain.verify(session)).ok
