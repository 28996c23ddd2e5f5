"""The console's monitoring: samples per minute, pruning, aggregation, activity, permissions."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from cmschat.app import monitoring_sampler
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.monitoring import sampler as sampler_module
from cmschat.monitoring.models import InstanceSample
from cmschat.monitoring.sampler import Instance, name_this_instance, prune_samples, record_sample
from cmschat.observability.minutes import WINDOW, Taken, Window
from cmschat.settings import MonitoringSettings
from tests.processes import clean_env, free_port, running_server
from tests.support import NamedUser, error_of

V1 = "/api/v1"


def taken(requests: int, errors: int = 0, p95: float | None = 20.0, ws: int = 0) -> Taken:
    return Taken(requests=requests, errors=errors, p95_ms=p95, messages=0, websockets=ws)


async def samples(context: AppContext) -> list[InstanceSample]:
    async with context.db.unit_of_work("system:test") as session:
        rows = await session.scalars(select(InstanceSample).order_by(InstanceSample.id))
        return list(rows.all())


async def monitoring(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    response = await client.get(f"{V1}/admin/monitoring", params=params, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_sampler_writes_one_sample_per_minute_with_the_minutes_traffic(
    context: AppContext, clock: FakeClock
) -> None:
    window = Window()
    sampler = monitoring_sampler(context, window=window)
    for status, seconds in [(200, 0.010), (200, 0.030), (503, 0.200), (201, 0.020)]:
        window.request("/api/v1/rooms", status, seconds)
    window.request("/readyz", 200, 5.0)  # probes are not traffic
    window.websocket_opened()
    window.message_stored()
    await sampler.tick()
    window.request("/api/v1/rooms", 200, 0.5)
    await sampler.tick()  # same minute: added to the same row
    clock.advance(minutes=1)
    await sampler.tick()  # a quiet minute still says the instance is alive

    first, second = await samples(context)
    assert first.instance == sampler.instance.id
    assert first.minute == clock.now().replace(second=0) - timedelta(minutes=1)
    assert (first.requests, first.errors, first.messages, first.websockets) == (5, 1, 1, 1)
    assert first.p95_ms == pytest.approx(500.0)
    assert first.ready is True
    assert "database=ok" in first.checks
    assert (second.requests, second.errors, second.p95_ms, second.websockets) == (0, 0, None, 1)


async def test_old_samples_are_pruned_in_batches_and_pruning_twice_is_harmless(
    context: AppContext, clock: FakeClock
) -> None:
    instance = Instance(id="a:1", host="a", version="1", started_at=clock.now())
    for _ in range(5):
        await record_sample(
            context.db, instance=instance, clock=clock, taken=taken(1), checks={"database": "ok"}
        )
        clock.advance(hours=1)
    # Now 5 h after the first: keep 2 h, so the three oldest go, two per transaction.
    removed = await prune_samples(context.db, clock=clock, keep=timedelta(hours=2), batch=2)
    assert removed == 3
    assert await prune_samples(context.db, clock=clock, keep=timedelta(hours=2)) == 0
    left = await samples(context)
    assert [s.minute for s in left] == [
        clock.now() - timedelta(hours=2),
        clock.now() - timedelta(hours=1),
    ]


async def test_two_instances_add_up_and_a_silent_one_is_marked(
    client: httpx.AsyncClient, context: AppContext, clock: FakeClock, admin: NamedUser
) -> None:
    one = Instance(id="web-1:10", host="web-1", version="0.1.0", started_at=clock.now())
    two = Instance(id="web-2:20", host="web-2", version="0.1.0", started_at=clock.now())
    for minute in range(3):
        await record_sample(
            context.db,
            instance=one,
            clock=clock,
            taken=taken(100 + minute, errors=1, p95=30.0, ws=4),
            checks={"database": "ok"},
        )
        if minute < 2:  # web-2 stops sampling after two minutes
            await record_sample(
                context.db,
                instance=two,
                clock=clock,
                taken=taken(50, errors=2, p95=80.0, ws=6),
                checks={"database": "ok", "redis": "unreachable"},
            )
        clock.advance(minutes=1)
    clock.advance(minutes=3)
    await record_sample(
        context.db, instance=one, clock=clock, taken=taken(7), checks={"database": "ok"}
    )

    body = await monitoring(client, await admin.login(client), hours=1)

    first = body["traffic"][0]
    assert (first["requests"], first["errors"], first["websockets"]) == (150, 3, 10)
    assert first["p95_ms"] == 80.0  # the slowest instance, not a meaningless sum
    assert first["instances"] == 2
    assert [m["instances"] for m in body["traffic"]] == [2, 2, 1, 1]
    by_host = {i["host"]: i for i in body["instances"]}
    assert by_host["web-1"]["state"] == "ready"
    assert by_host["web-2"]["state"] == "silent"
    assert by_host["web-2"]["checks"] == {"database": "ok", "redis": "unreachable"}


async def test_an_instance_whose_readiness_fails_is_not_ready(
    client: httpx.AsyncClient, context: AppContext, clock: FakeClock, admin: NamedUser
) -> None:
    instance = Instance(id="web-3:30", host="web-3", version="0.1.0", started_at=clock.now())
    await record_sample(
        context.db,
        instance=instance,
        clock=clock,
        taken=taken(1),
        checks={"database": "ok", "storage": "unreachable"},
    )
    body = await monitoring(client, await admin.login(client))
    [found] = body["instances"]
    assert found["state"] == "not_ready"
    assert found["checks"]["storage"] == "unreachable"


async def test_activity_counts_messages_per_hour_and_senders_per_day(
    client: httpx.AsyncClient,
    context: AppContext,
    clock: FakeClock,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    alice_headers, bob_headers = await alice.login(client), await bob.login(client)
    room = await client.post(
        f"{V1}/rooms",
        json={"kind": "group", "name": "ops", "member_ids": [bob.id]},
        headers=alice_headers,
    )
    room_id = room.json()["id"]

    async def say(headers: dict[str, str], text: str) -> None:
        sent = await client.post(
            f"{V1}/rooms/{room_id}/messages", json={"content": text}, headers=headers
        )
        assert sent.status_code == 201, sent.text

    # Two days ago (09:00 UTC): alice twice, bob once; today: alice once.
    clock.advance(days=-2)
    await say(alice_headers, "안녕하세요")
    await say(alice_headers, "회의는 10시")
    await say(bob_headers, "ok")
    clock.advance(days=2, minutes=30)
    await say(alice_headers, "today")

    body = await monitoring(client, await admin.login(client), utc_offset_minutes=540)

    hours = body["messages_per_hour"]
    assert len(hours) == 168
    assert hours[-1]["messages"] == 1  # this hour
    assert hours[-49]["messages"] == 3  # 48 hours ago
    assert sum(h["messages"] for h in hours) == 4
    days = body["days"]
    assert len(days) == 7
    # 09:00 UTC is 18:00 in Seoul: the days are Seoul's calendar days.
    assert days[-1]["day"].endswith("15:00:00Z")
    assert (days[-1]["messages"], days[-1]["active_users"]) == (1, 1)
    assert (days[-3]["messages"], days[-3]["active_users"]) == (3, 2)
    assert sum(d["messages"] for d in days) == 4


async def test_alerts_not_configured_and_unreachable_are_told_apart(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    body = await monitoring(client, headers)
    assert body["alerts"] == {"state": "not_configured", "detail": None, "total": 0, "items": []}
    monitoring_settings = context.settings.monitoring
    monitoring_settings.alertmanager_url = "http://127.0.0.1:9"  # discard: nothing listens
    monitoring_settings.alertmanager_timeout_seconds = 1
    body = await monitoring(client, headers)
    assert body["alerts"]["state"] == "unreachable"
    assert body["alerts"]["detail"]


async def test_only_admins_may_read_monitoring_and_parameters_are_bounded(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, agent: NamedUser
) -> None:
    url = f"{V1}/admin/monitoring"
    assert (await client.get(url)).status_code == 401
    for user in (alice, agent):
        refused = await client.get(url, headers=await user.login(client))
        assert refused.status_code == 403
    headers = await admin.login(client)
    for params, field in [
        ({"hours": 0}, "hours"),
        ({"hours": 49}, "hours"),
        ({"hours": "six"}, "hours"),
        ({"utc_offset_minutes": 900}, "utc_offset_minutes"),
    ]:
        response = await client.get(url, params=params, headers=headers)
        assert response.status_code == 422, params
        assert field in error_of(response)["message"]
    empty = await monitoring(client, headers, hours=48)
    assert empty["traffic"] == [] and empty["instances"] == []
    assert empty["hours"] == 48


async def test_samples_table_stays_bounded_by_the_setting(
    context: AppContext, clock: FakeClock
) -> None:
    context.settings.monitoring.sample_keep_hours = 1
    sampler = monitoring_sampler(context, window=Window())
    for _ in range(90):
        await sampler.tick()
        clock.advance(minutes=1)
    async with context.db.unit_of_work("system:test") as session:
        count = await session.scalar(select(func.count()).select_from(InstanceSample))
    assert count == 61  # the last hour, its first minute included


async def test_requests_answered_by_the_app_reach_the_next_sample(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser
) -> None:
    WINDOW.take()  # start from an empty minute
    headers = await admin.login(client)
    await client.get(f"{V1}/admin/monitoring", headers=headers)
    await client.get(f"{V1}/admin/monitoring", params={"hours": 0}, headers=headers)
    await client.get("/readyz")
    await monitoring_sampler(context).tick()
    [sample] = await samples(context)
    assert sample.requests == 3  # login, two reads; the probe is left out
    assert sample.errors == 0  # a 422 is the client's error, not the server's
    assert sample.p95_ms is not None and sample.p95_ms > 0


def test_the_alertmanager_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="alertmanager_url"):
        MonitoringSettings(alertmanager_url="file:///etc/passwd")
    assert MonitoringSettings(alertmanager_url="http://127.0.0.1:9093").alertmanager_url


async def test_a_restart_is_the_same_instance_and_a_graceful_stop_is_not_a_fault(
    client: httpx.AsyncClient,
    context: AppContext,
    clock: FakeClock,
    admin: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Named by host and port (and worker), not process id: after a release the console
    shows the instance once, with its new start, not a stale row per old process."""
    monkeypatch.setattr(sampler_module, "_port", None)
    monkeypatch.setattr(sampler_module, "_worker", None)
    name_this_instance(port=8000, worker=2)
    headers = await admin.login(client)

    old = monitoring_sampler(context, window=Window())
    assert old.instance.id == f"{socket.gethostname()}:8000/w2"
    await old.tick()
    await old.stopped()
    clock.advance(minutes=10)
    (shown,) = (await monitoring(client, headers, hours=1))["instances"]
    assert (shown["instance"], shown["state"]) == (old.instance.id, "stopped")

    clock.advance(seconds=5)
    new = monitoring_sampler(context, window=Window())
    assert new.instance.id == old.instance.id
    await new.tick()
    (shown,) = (await monitoring(client, headers, hours=1))["instances"]
    assert shown["state"] == "ready"
    assert datetime.fromisoformat(shown["started_at"]) == new.instance.started_at

    # Stopped and started again within one minute: the row is the new process's.
    await new.stopped()
    clock.advance(seconds=5)
    newer = monitoring_sampler(context, window=Window())
    await newer.tick()
    (shown,) = (await monitoring(client, headers, hours=1))["instances"]
    assert shown["state"] == "ready"
    assert datetime.fromisoformat(shown["started_at"]) == newer.instance.started_at


def test_a_served_instance_records_its_stop_under_its_port(tmp_path: Path) -> None:
    """``cmschat serve`` names the samples by its port, and SIGTERM leaves a last sample
    that says the instance stopped (what the console shows after a release)."""
    env = clean_env(CMSCHAT_ENVIRONMENT="test", CMSCHAT_AUTH__BCRYPT_ROUNDS="4")
    port = free_port()
    name = f"{socket.gethostname()}:{port}"
    path = tmp_path / "var" / "cmschat.db"

    def newest() -> tuple[str, int, str] | None:
        database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        with contextlib.closing(database):
            row: tuple[str, int, str] | None = database.execute(
                "SELECT instance, ready, checks FROM instance_samples ORDER BY minute DESC"
            ).fetchone()
            return row

    with running_server(tmp_path, env, "sampled", port=port) as server:
        # The first sample is taken at start, not a minute later.
        deadline = time.monotonic() + 30
        while newest() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first = newest()
        assert first is not None and first[:2] == (name, 1)
        assert server.stop() == 0
    assert newest() == (name, 0, "process=stopped")
