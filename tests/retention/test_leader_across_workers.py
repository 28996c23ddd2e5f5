"""One purge leader across ``serve --workers 3``, and a takeover when it is killed (-9).

Real processes on MariaDB + Redis. The room's messages are three days old (written by the
app in-process with a clock set back), the global retention is one day, and the purge
runs one message per batch with a pause, so it lasts long enough to kill its leader.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from cmschat.app import create_app
from cmschat.audit.service import audited
from cmschat.chat.models import Message
from cmschat.clock import FakeClock, SystemClock
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.session import Database, create_engine
from cmschat.jobs.models import JobLease
from cmschat.retention.job import RETENTION_JOB
from tests import support
from tests.cli.test_workers import children
from tests.processes import running_server
from tests.realtime.test_multi_instance import cluster_env, login  # noqa: F401 - fixture
from tests.support import audit_events

pytestmark = pytest.mark.slow
MESSAGES = 12
LEASE_SECONDS = 5
CHECK_SECONDS = 1
PURGE = {
    "CMSCHAT_RETENTION__MESSAGE_DAYS": "1",
    "CMSCHAT_RETENTION__BATCH_SIZE": "1",
    "CMSCHAT_RETENTION__BATCH_PAUSE_MS": "400",
    "CMSCHAT_RETENTION__LEASE_SECONDS": str(LEASE_SECONDS),
    "CMSCHAT_RETENTION__CHECK_SECONDS": str(CHECK_SECONDS),
}


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    db = audited(Database(create_engine(url), SystemClock()))
    try:
        yield db
    finally:
        await db.dispose()


async def old_room(url: str, directory: Path) -> int:
    """A room of ``MESSAGES`` messages sent three days ago, written through the app."""
    settings = support.settings_for(url, directory / "var")
    application = create_app(settings, clock=FakeClock(datetime.now(UTC) - timedelta(days=3)))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            ann = await login(http, "ann")
            made = await http.post(
                "/api/v1/rooms",
                headers=ann,
                json={"kind": "group", "name": "old", "member_ids": []},
            )
            room: int = made.json()["id"]
            for n in range(MESSAGES):
                sent = await http.post(
                    f"/api/v1/rooms/{room}/messages", headers=ann, json={"content": f"old {n}"}
                )
                assert sent.status_code == 201, sent.text
    return room


async def leader_pid(db: Database) -> int | None:
    """The pid in the purge's unexpired lease (None: nobody holds it)."""
    async with db.unit_of_work(SYSTEM_CLI, read_only=True) as session:
        row = await session.scalar(select(JobLease).where(JobLease.name == RETENTION_JOB))
    if row is None or row.holder is None or row.expires_at is None:
        return None
    if row.expires_at <= datetime.now(UTC):
        return None
    return int(row.holder.split(":")[1])


async def left(db: Database, room: int) -> int:
    async with db.unit_of_work(SYSTEM_CLI, read_only=True) as session:
        return int(await session.scalar(select(func.count()).where(Message.room_id == room)) or 0)


async def completed(db: Database) -> bool:
    async with db.unit_of_work(SYSTEM_CLI, read_only=True) as session:
        row = await session.scalar(select(JobLease).where(JobLease.name == RETENTION_JOB))
    return row is not None and row.last_completed_at is not None


def runs(base_url: str) -> dict[str, float]:
    """``cmschat_retention_runs_total`` by result, summed over the workers by one scrape."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cmschat_retention_runs_total"
    }


async def poll(condition: object, within: float, what: str) -> float:
    """Seconds until the async ``condition()`` holds (the database is polled, no event)."""
    started = time.monotonic()
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() - started < within, f"{what}: not within {within} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_one_worker_purges_and_another_takes_over_when_it_is_killed(
    cluster_env: dict[str, str],  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    url = cluster_env["CMSCHAT_DATABASE_URL"]
    room = await old_room(url, tmp_path)
    async with database(url) as db:
        with running_server(tmp_path, cluster_env | PURGE, "workers", workers=3) as server:
            workers = children(server.process.pid)
            # All three start the purge at once; the lease lets one in.
            await poll(lambda: _holds(db), 60, "nobody took the purge")
            first = await leader_pid(db)
            assert first in workers

            async def begun() -> bool:
                return await left(db, room) < MESSAGES

            await poll(begun, 30, "the leader purged nothing")

            os.kill(first, signal.SIGKILL)
            killed_at = time.monotonic()

            async def other_leader() -> bool:
                return (await leader_pid(db)) not in (None, first)

            takeover = await poll(other_leader, LEASE_SECONDS + CHECK_SECONDS + 20, "takeover")
            second = await leader_pid(db)
            await poll(lambda: completed(db), 60, "purge not completed")
            finished = time.monotonic() - killed_at
            assert await left(db, room) == 0

            # Each worker checks every CHECK_SECONDS: a window of several checks, in which
            # none may run the slot again (nothing to wait on: the point is that none acts).
            await asyncio.sleep(4 * CHECK_SECONDS)
            assert runs(server.base_url).get("success") == 1.0
            assert runs(server.base_url).get("failure", 0.0) == 0.0
        purged = await audit_events(db, action="retention.purged", target_id=str(room))
        runs_audited = await audit_events(db, action="retention.run")
    assert len(runs_audited) == 1, "the purge of one daily slot ran more than once"
    assert len(purged) == 1
    changes = json.loads(purged[0].changes)
    assert changes["messages"] == MESSAGES
    assert changes["interrupted_runs"] == 1
    print(
        f"\nleader pid {first} killed; pid {second} took over after "
        f"{takeover:.1f} s (lease {LEASE_SECONDS} s, check every {CHECK_SECONDS} s); "
        f"purge completed {finished:.1f} s after the kill"
    )


async def _holds(db: Database) -> bool:
    return await leader_pid(db) is not None
