"""A lease in the database decides which instance runs a job: the leader.

Works the same on SQLite (one file shared by processes) and MariaDB (any number of
hosts): taking the lease is one short transaction on the job's row, locked with
``SELECT … FOR UPDATE``. A leader that dies simply stops renewing; its lease expires and
another instance takes over at the next attempt.
"""

from __future__ import annotations

import enum
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.clock import Clock
from cmschat.db.session import Database
from cmschat.jobs.models import JobLease

T = TypeVar("T")


def holder_name() -> str:
    """Who this process is, as written in the lease."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


async def last_completed(session: AsyncSession, *, name: str) -> datetime | None:
    """When a job last finished, on any instance (None: never)."""
    return await session.scalar(select(JobLease.last_completed_at).where(JobLease.name == name))


def due(last: datetime | None, slot: datetime) -> bool:
    """Whether a job that last completed at ``last`` (None: never) still owes ``slot``."""
    return last is None or last < slot


class Skipped(enum.Enum):
    """Why ``Lease.lead`` did not run the work."""

    NOT_DUE = "not due"
    """The slot was done already (by any instance)."""
    BUSY = "busy"
    """Another live instance holds the lease."""
    BASELINE = "baseline"
    """The job's first slot, recorded as done without running (see ``lead``)."""


@dataclass
class Turn:
    """One run as the leader; the work sets ``completed`` when its slot counts as done."""

    completed: bool = False


class Lease:
    """One job's lease as seen by one instance."""

    def __init__(
        self,
        db: Database,
        *,
        name: str,
        clock: Clock,
        ttl: timedelta,
        actor: str,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.name = name
        self.holder = holder or holder_name()
        self.clock = clock
        self.ttl = ttl
        self.actor = actor

    async def acquire(self) -> bool:
        """Take (or renew) the lease; False while another live instance holds it."""
        now = self.clock.now()
        try:
            async with self.db.unit_of_work(self.actor) as session:
                row = await session.scalar(
                    select(JobLease).where(JobLease.name == self.name).with_for_update()
                )
                if row is None:
                    session.add(
                        JobLease(name=self.name, holder=self.holder, expires_at=now + self.ttl)
                    )
                    return True
                if row.holder not in (None, self.holder) and (
                    row.expires_at is not None and row.expires_at > now
                ):
                    return False
                row.holder, row.expires_at = self.holder, now + self.ttl
                return True
        except IntegrityError:
            return False  # another instance created the row first, and holds it

    async def renew(self) -> bool:
        """Extend the lease between batches; False if it was lost meanwhile."""
        return await self.acquire()

    async def last_completed(self) -> datetime | None:
        """When the job last finished, on any instance."""
        async with self.db.unit_of_work(self.actor) as session:
            return await last_completed(session, name=self.name)

    async def release(self, *, completed: bool) -> None:
        """Give the lease up, recording a completed run."""
        async with self.db.unit_of_work(self.actor) as session:
            row = await session.scalar(
                select(JobLease).where(JobLease.name == self.name).with_for_update()
            )
            if row is None or row.holder != self.holder:
                return
            row.holder, row.expires_at = None, None
            if completed:
                row.last_completed_at = self.clock.now()

    async def lead(
        self,
        work: Callable[[Turn], Awaitable[T]],
        *,
        slot: Callable[[], datetime] | None = None,
        baseline: bool = False,
    ) -> T | Skipped:
        """Run ``work`` as the leader; the lease is released whatever happens.

        ``slot``: the start of the slot now due. The work runs only if the job has not
        completed since, checked before taking the lease (cheap, no lock) and again under
        it: another instance may have just finished it. None: run now, as the leader.
        ``baseline``: a job that never completed records its slot as done without running,
        so that a new deployment's first run is the next slot.
        """
        if slot is not None and not due(await self.last_completed(), slot()):
            return Skipped.NOT_DUE
        if not await self.acquire():
            return Skipped.BUSY
        turn = Turn()
        try:
            if slot is not None:
                last = await self.last_completed()
                if not due(last, slot()):
                    return Skipped.NOT_DUE
                if last is None and baseline:
                    turn.completed = True
                    return Skipped.BASELINE
            return await work(turn)
        finally:
            await self.release(completed=turn.completed)
