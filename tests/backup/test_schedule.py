"""The in-process schedule: daily full backups at 03:00 Seoul time, weekly drills, one leader."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from cmschat.backup import service
from cmschat.backup.schedule import DRILL_JOB, FULL_JOB, BackupSchedule, last_daily, last_weekly
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.backup.conftest import Chat
from tests.support import audit_events

SEOUL = ZoneInfo("Asia/Seoul")


def test_slots_are_in_the_configured_time_zone() -> None:
    # 03:00 in Seoul is 18:00 UTC the day before.
    now = datetime(2026, 1, 1, 18, 30, tzinfo=UTC)
    assert last_daily(now, time(3, 0), SEOUL) == datetime(2026, 1, 1, 18, 0, tzinfo=UTC)
    assert last_daily(now, time(3, 0), ZoneInfo("UTC")) == datetime(2026, 1, 1, 3, tzinfo=UTC)
    # Sunday 05:00 Seoul before Friday 2026-01-02 03:30 Seoul: 2025-12-28.
    assert last_weekly(now, 6, time(5, 0), SEOUL) == datetime(2025, 12, 27, 20, tzinfo=UTC)


async def test_full_backups_and_drills_run_in_their_slots_on_one_leader(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock
) -> None:
    await chat.say(2)
    assert clock.now() == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)  # Thursday 18:00 in Seoul
    first = BackupSchedule(kit, context.db, holder="one")
    second = BackupSchedule(kit, context.db, holder="two")

    # A first start only sets the baseline: no surprise backup at deployment.
    assert await first.tick() == []
    assert await service.list_backups(kit=kit) == []

    clock.advance(hours=9, minutes=10)  # Friday 03:10 in Seoul
    ran = await asyncio.gather(first.tick(), second.tick())
    assert sorted(ran, key=len) == [[], [FULL_JOB]]
    assert len(await service.list_backups(kit=kit)) == 1
    assert await first.tick() == [] and await second.tick() == []

    clock.advance(days=2, hours=2)  # Sunday 05:10 in Seoul: a full backup and the drill
    assert await second.tick() == [FULL_JOB, DRILL_JOB]
    backups = await service.list_backups(kit=kit)
    assert len(backups) == 2
    from cmschat.backup.drill import last_drill

    drill = await last_drill(kit=kit)
    assert drill is not None and drill["backup_id"] == backups[0].id and drill["ok"] is True
    # Each ran in a child process at the lowest CPU priority, audited by this instance.
    events = [
        *await audit_events(context.db, action="backup.run"),
        *await audit_events(context.db, action="backup.drill"),
    ]
    assert len(events) == 3
    pids = {json.loads(event.changes)["process"]["pid"] for event in events}
    assert len(pids) == 3 and os.getpid() not in pids
    assert {json.loads(event.changes)["process"]["nice"] for event in events} == {19}


def test_incremental_slots_count_from_local_midnight() -> None:
    from cmschat.backup.schedule import last_every

    now = datetime(2026, 1, 1, 18, 59, tzinfo=UTC)  # 03:59 in Seoul
    assert last_every(now, 60, SEOUL) == datetime(2026, 1, 1, 18, 0, tzinfo=UTC)
    assert last_every(now, 15, SEOUL) == datetime(2026, 1, 1, 18, 45, tzinfo=UTC)


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_failing_scheduled_backup_is_reported_once_per_slot(
    context: AppContext, kit: service.Toolkit, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = BackupSchedule(kit, context.db, holder="one")
    assert await schedule.tick() == []  # the baseline
    kit.settings.backup.recipients = []
    clock.advance(days=1)
    # Recipients missing (full) and binary logging off (incremental): errors an operator
    # must fix, logged once per slot with the setting to change, not every minute.
    assert await schedule.tick() == []
    assert await schedule.tick() == []
    failed = {
        r.getMessage() for r in caplog.records if getattr(r, "event.action", "") == "backup.failed"
    }
    assert len(failed) == 2
    assert any("CMSCHAT_BACKUP__RECIPIENTS" in m for m in failed)
    assert any("log_bin=ON" in m for m in failed)
