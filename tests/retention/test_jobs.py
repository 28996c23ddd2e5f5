"""One leader per purge: the lease (two instances, two processes) and the daily schedule."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path

from bench import children
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_RETENTION
from cmschat.db.session import Database, create_engine
from cmschat.jobs.lease import Lease
from cmschat.jobs.scheduler import LEASE_TTL, last_slot
from cmschat.retention.job import RetentionJob
from cmschat.settings import RetentionSettings
from tests.processes import COMMAND_TIMEOUT
from tests.retention.conftest import Chat
from tests.support import audit_events

REPO = Path(__file__).resolve().parents[2]


def lease(db: Database, holder: str, clock: FakeClock) -> Lease:
    return Lease(
        db, name="retention", holder=holder, clock=clock, ttl=LEASE_TTL, actor=SYSTEM_RETENTION
    )


async def test_two_instances_racing_for_the_lease_get_one_leader(
    database_url: str, clock: FakeClock
) -> None:
    instances = [audited(Database(create_engine(database_url), clock)) for _ in range(2)]
    try:
        for _ in range(3):
            contenders = [lease(db, f"instance-{n}", clock) for n, db in enumerate(instances)]
            won = await asyncio.gather(*(c.acquire() for c in contenders))
            assert sorted(won) == [False, True]
            winner = contenders[won.index(True)]
            loser = contenders[won.index(False)]
            assert await winner.renew() is True
            assert await loser.acquire() is False
            await winner.release(completed=False)
    finally:
        for db in instances:
            await db.dispose()


async def test_a_dead_leader_loses_the_lease_when_it_expires(
    context: AppContext, clock: FakeClock
) -> None:
    dead, alive = lease(context.db, "dead", clock), lease(context.db, "alive", clock)
    assert await dead.acquire()
    clock.advance(seconds=LEASE_TTL.total_seconds() - 1)
    assert not await alive.acquire()
    clock.advance(seconds=2)
    assert await alive.acquire()
    assert not await dead.renew()


def holder(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and test module
        [sys.executable, "-m", "tests.retention.lease_holder", url],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=children.with_parent(),
    )


async def test_two_processes_one_leader(context: AppContext, database_url: str) -> None:
    with holder(database_url) as first:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "leader"
        with holder(database_url) as second:
            out, _ = second.communicate(timeout=COMMAND_TIMEOUT)
        assert out.strip() == "follower"
        first.communicate("release\n", timeout=COMMAND_TIMEOUT)
        assert first.returncode == 0
    with holder(database_url) as third:
        assert third.stdout is not None
        assert third.stdout.readline().strip() == "leader"
        third.communicate("release\n", timeout=COMMAND_TIMEOUT)


def test_the_daily_slot() -> None:
    at = time(3, 30)
    before = datetime(2026, 5, 2, 3, 0, tzinfo=UTC)
    after = datetime(2026, 5, 2, 3, 30, tzinfo=UTC)
    assert last_slot(before, at) == datetime(2026, 5, 1, 3, 30, tzinfo=UTC)
    assert last_slot(after, at) == after


async def test_the_schedule_runs_once_per_day_on_one_instance(chat: Chat, clock: FakeClock) -> None:
    room = await chat.room("ops")
    await chat.send(room, "old")
    await chat.set_defaults(message_days=1, attachment_days=None)
    settings = RetentionSettings(run_at=time(3, 30))
    await chat.advance(days=1, hours=18)  # 03:00, before today's slot
    assert clock.now().time() == time(3, 0)
    ctx = chat.context
    jobs = [
        RetentionJob(ctx.db, clock=clock, settings=settings, eraser=ctx.eraser, holder=name)
        for name in ("a", "b")
    ]

    # Never run before: yesterday's slot is due, and only one instance runs it.
    reports = [await job.tick() for job in jobs]
    assert [r is not None for r in reports] == [True, False]
    assert await chat.history(room) == []
    clock.advance(minutes=20)
    assert [await job.tick() for job in jobs] == [None, None]

    clock.advance(minutes=15)  # today's 03:30 slot has come
    assert await jobs[1].tick() is not None
    assert await jobs[0].tick() is None
    runs = await audit_events(ctx.db, action="retention.run")
    assert len(runs) == 2
    clock.advance(days=1, minutes=-5, seconds=-1)  # tomorrow 03:29:59
    assert await jobs[0].due() is False
    clock.advance(seconds=1)
    assert await jobs[0].due() is True
