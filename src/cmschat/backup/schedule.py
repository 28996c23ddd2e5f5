"""Backups and drills on a schedule, on one leader at a time, each in a child process.

The same lease as the retention purge: each job has a row; the instance that takes it
runs the slot, records it completed, and the others see the slot as done. Slots are
computed in the configured time zone (default Asia/Seoul: 03:00 there, not UTC). The
work runs in a low-priority child process (``child.py``) so sends stay fast meanwhile.
A deployment's first start sets the baseline instead of backing up at once, so the first
scheduled backup is the next slot (``cmschat backup run`` makes one at any time).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cmschat.backup.child import backup_in_child, drill_in_child
from cmschat.backup.service import Toolkit
from cmschat.db.actors import SYSTEM_BACKUP
from cmschat.db.session import Database
from cmschat.errors import CmschatError
from cmschat.jobs.lease import Lease, Turn

log = logging.getLogger(__name__)

FULL_JOB = "backup.full"
INCREMENTAL_JOB = "backup.incremental"
DRILL_JOB = "backup.drill"
LEASE_TTL = timedelta(hours=2)
"""A backup is one long step between renewals: the lease outlives the slowest one."""


def last_daily(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The most recent daily slot at ``at`` (local time in ``zone``) not after ``now``."""
    local = now.astimezone(zone)
    slot = local.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if slot > local:
        slot -= timedelta(days=1)
    return slot.astimezone(UTC)


def last_every(now: datetime, minutes: int, zone: ZoneInfo) -> datetime:
    """The most recent slot of a period of ``minutes``, counted from local midnight."""
    local = now.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = int((local - midnight).total_seconds() // 60)
    return (midnight + timedelta(minutes=elapsed - elapsed % minutes)).astimezone(UTC)


def last_weekly(now: datetime, weekday: int, at: time, zone: ZoneInfo) -> datetime:
    """The most recent weekly slot (``weekday`` 0 = Monday) not after ``now``."""
    slot = last_daily(now, at, zone).astimezone(zone)
    while slot.weekday() != weekday:
        slot -= timedelta(days=1)
    return slot.astimezone(UTC)


class SlotJob:
    """One leader-only job with a most-recent slot; runs when that slot is not done yet."""

    def __init__(
        self,
        db: Database,
        *,
        name: str,
        slot: Callable[[datetime], datetime],
        work: Callable[[], Awaitable[object]],
        kit: Toolkit,
        holder: str | None = None,
    ) -> None:
        self.slot = slot
        self.work = work
        self.clock = kit.clock
        self.name = name
        self.lease = Lease(
            db, name=name, clock=kit.clock, ttl=LEASE_TTL, actor=SYSTEM_BACKUP, holder=holder
        )

    async def tick(self) -> bool:
        """Run if this slot is due and no other instance got to it; True if it ran."""
        ran = await self.lease.lead(
            self._run, slot=lambda: self.slot(self.clock.now()), baseline=True
        )
        return ran is True

    async def _run(self, turn: Turn) -> bool:
        try:
            await self.work()
        except CmschatError as exc:
            # A setting or state only a person can fix: said once per slot, not
            # every minute; the metrics show the backups missing meanwhile.
            log.error(
                "%s failed: %s",
                self.name,
                exc.message,
                extra={"event.action": "backup.failed", "event.outcome": "failure"},
            )
            turn.completed = True
            return False
        turn.completed = True
        return True


class BackupSchedule:
    """The daily full backup, the incrementals (MariaDB) and the weekly drill."""

    def __init__(self, kit: Toolkit, db: Database, *, holder: str | None = None) -> None:
        settings = kit.settings.backup
        zone = ZoneInfo(settings.timezone)
        self.jobs = [
            SlotJob(
                db,
                name=FULL_JOB,
                slot=lambda now: last_daily(now, settings.full_at, zone),
                work=lambda: backup_in_child(kit=kit, db=db, kind="full"),
                kit=kit,
                holder=holder,
            ),
            SlotJob(
                db,
                name=DRILL_JOB,
                slot=lambda now: last_weekly(now, settings.drill_weekday, settings.drill_at, zone),
                work=lambda: drill_in_child(kit=kit, db=db),
                kit=kit,
                holder=holder,
            ),
        ]

        if settings.incremental_minutes and kit.engine.kind == "mariadb":
            self.jobs.insert(
                1,
                SlotJob(
                    db,
                    name=INCREMENTAL_JOB,
                    slot=lambda now: last_every(now, settings.incremental_minutes, zone),
                    work=lambda: backup_in_child(kit=kit, db=db, kind="incremental"),
                    kit=kit,
                    holder=holder,
                ),
            )

    async def tick(self) -> list[str]:
        """Run whatever is due; returns the names of the jobs that ran."""
        ran = []
        for job in self.jobs:
            if await job.tick():
                ran.append(job.name)
        return ran
