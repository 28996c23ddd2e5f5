"""The retention purge as a leader-only job: scheduled daily, or run now from the CLI.

Every instance runs the same loop; the lease in the database makes sure one of them, and
only one, purges in each daily slot, even when several start at the same moment. A
slot missed while every instance was down is caught up at the next start.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from cmschat.attachments.erasure import Eraser
from cmschat.clock import Clock
from cmschat.db.actors import SYSTEM_RETENTION
from cmschat.db.session import Database
from cmschat.jobs.lease import Lease, Skipped, Turn, due
from cmschat.jobs.scheduler import JobBusy, last_slot
from cmschat.observability import instruments
from cmschat.retention.purge import Report, run_purge
from cmschat.settings import RetentionSettings

log = logging.getLogger(__name__)

RETENTION_JOB = "retention"
"""The retention purge's name in the job leases."""


class RetentionJob:
    """The purge as a leader-only job: scheduled daily, or run now from the CLI."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        settings: RetentionSettings,
        eraser: Eraser,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.eraser = eraser
        ttl = timedelta(seconds=settings.lease_seconds)
        self.lease = Lease(
            db, name=RETENTION_JOB, clock=clock, ttl=ttl, actor=SYSTEM_RETENTION, holder=holder
        )

    def _slot(self) -> datetime:
        return last_slot(self.clock.now(), self.settings.run_at)

    async def due(self) -> bool:
        """Whether this day's slot has not been purged yet (by any instance)."""
        return due(await self.lease.last_completed(), self._slot())

    async def run_now(self) -> Report:
        """Purge now, as the leader; JobBusy if another instance is purging."""
        report = await self.lease.lead(self._purge)
        if isinstance(report, Skipped):
            raise JobBusy("another instance is purging right now; try again later")
        return report

    async def tick(self) -> Report | None:
        """Purge if this day's slot is due and no other instance got to it first."""
        report = await self.lease.lead(self._purge, slot=self._slot)
        if report is Skipped.BUSY:
            log.info(
                "retention: another instance is purging",
                extra={"event.action": "retention.skipped"},
            )
        return None if isinstance(report, Skipped) else report

    async def _purge(self, turn: Turn) -> Report:
        try:
            report = await run_purge(
                self.db,
                clock=self.clock,
                settings=self.settings,
                eraser=self.eraser,
                keep_going=self.lease.renew,
            )
        except Exception:
            instruments.retention_failed()
            raise
        turn.completed = not report.stopped_early
        messages, files, size = report.totals
        instruments.retention_ran(
            messages=messages,
            files=files,
            audit_events=report.audit_events_expired,
            completed=turn.completed,
        )
        log.info(
            "retention: purged %d messages and %d files (%d bytes) in %d rooms; "
            "%d audit events expired",
            messages,
            files,
            size,
            len(report.rooms),
            report.audit_events_expired,
            extra={"event.action": "retention.run"},
        )
        return report
