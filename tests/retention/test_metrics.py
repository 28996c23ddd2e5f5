"""Retention runs are counted: successes with what they purged and when, and failures."""

from __future__ import annotations

import pytest

from cmschat.clock import FakeClock
from cmschat.retention import job as retention_job
from cmschat.retention.job import RetentionJob
from cmschat.settings import RetentionSettings
from tests.observability.metrics_support import value
from tests.retention.conftest import Chat


async def test_a_purge_counts_its_result_what_it_removed_and_when(
    chat: Chat, clock: FakeClock
) -> None:
    room = await chat.room("ops")
    await chat.send(room, "old")
    await chat.set_defaults(message_days=1, attachment_days=None)
    await chat.advance(days=2)
    ctx = chat.context
    job = RetentionJob(ctx.db, clock=clock, settings=RetentionSettings(), eraser=ctx.eraser)
    runs = value("cmschat_retention_runs_total", result="success")
    purged = value("cmschat_retention_purged_total", kind="messages")
    await job.run_now()
    assert value("cmschat_retention_runs_total", result="success") == runs + 1
    assert value("cmschat_retention_purged_total", kind="messages") == purged + 1
    assert value("cmschat_retention_last_success_timestamp_seconds") > 0


async def test_a_failed_purge_is_counted(
    chat: Chat, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(retention_job, "run_purge", broken)
    ctx = chat.context
    job = RetentionJob(ctx.db, clock=clock, settings=RetentionSettings(), eraser=ctx.eraser)
    failures = value("cmschat_retention_runs_total", result="failure")
    with pytest.raises(RuntimeError):
        await job.run_now()
    assert value("cmschat_retention_runs_total", result="failure") == failures + 1
