"""Each instance writes one sample about itself per minute, and prunes old ones.

No leader is needed: an instance only ever writes its own rows (keyed by instance and
minute), and pruning by age is idempotent, so any instance may do it, twice or at once.

An instance is named by where it serves (``host:port``, and ``/wN`` for worker N of
``serve --workers``), not by its process id: a restart or a release on the same port is
the same instance with a new start time, not a new row that would stay ``silent`` for
the console's whole period after every deploy. A process that stops gracefully says so
in a last sample, so the console tells a stopped instance from one that went quiet.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from cmschat import __version__
from cmschat.clock import Clock
from cmschat.db.actors import SYSTEM_MONITORING
from cmschat.db.session import Database
from cmschat.monitoring.models import InstanceSample
from cmschat.observability.minutes import WINDOW, Taken, Window

PRUNE_BATCH = 1000
CHECKS_LENGTH = 255
STOPPED = {"process": "stopped"}
"""The checks of a graceful stop's last sample."""

_port: int | None = None
"""The port this process serves on, when ``cmschat serve`` started it."""
_worker: int | None = None


def name_this_instance(*, port: int, worker: int | None = None) -> None:
    """Name this process's samples by the port it serves (called by ``cmschat serve``)."""
    global _port, _worker
    _port, _worker = port, worker


@dataclass(frozen=True)
class Instance:
    """Who writes the samples: one process."""

    id: str
    host: str
    version: str
    started_at: datetime


def this_instance(clock: Clock) -> Instance:
    """This process, as its samples name it: host and port when ``cmschat serve`` runs it
    (and the worker's number), else host and process id."""
    host = socket.gethostname()[:100]
    name = f"{host}:{os.getpid() if _port is None else _port}"
    if _port is not None and _worker is not None:
        name += f"/w{_worker}"
    return Instance(id=name[:128], host=host, version=__version__, started_at=clock.now())


def minute_of(moment: datetime) -> datetime:
    """The minute ``moment`` falls in."""
    return moment.replace(second=0, microsecond=0)


def format_checks(checks: dict[str, str]) -> str:
    """Readiness checks as stored: ``database=ok,storage=ok``."""
    return ",".join(f"{name}={state}" for name, state in sorted(checks.items()))[:CHECKS_LENGTH]


async def record_sample(
    db: Database, *, instance: Instance, clock: Clock, taken: Taken, checks: dict[str, str]
) -> None:
    """Store this minute's sample; a second call in the same minute adds to the first."""
    minute = minute_of(clock.now())
    ready = all(state == "ok" for state in checks.values())
    async with db.unit_of_work(SYSTEM_MONITORING) as session:
        row = await session.scalar(
            select(InstanceSample).where(
                InstanceSample.instance == instance.id, InstanceSample.minute == minute
            )
        )
        if row is None:
            session.add(
                InstanceSample(
                    instance=instance.id,
                    minute=minute,
                    host=instance.host,
                    version=instance.version,
                    started_at=instance.started_at,
                    ready=ready,
                    checks=format_checks(checks),
                    requests=taken.requests,
                    errors=taken.errors,
                    p95_ms=taken.p95_ms,
                    websockets=taken.websockets,
                    messages=taken.messages,
                )
            )
            return
        # A restart within the minute: the same instance, now the new process.
        row.host, row.version, row.started_at = instance.host, instance.version, instance.started_at
        row.ready, row.checks = ready, format_checks(checks)
        row.requests += taken.requests
        row.errors += taken.errors
        row.messages += taken.messages
        row.websockets = taken.websockets
        if taken.p95_ms is not None:
            row.p95_ms = max(row.p95_ms or 0.0, taken.p95_ms)


async def prune_samples(
    db: Database, *, clock: Clock, keep: timedelta, batch: int = PRUNE_BATCH
) -> int:
    """Delete samples older than ``keep``, one short transaction per batch; how many went."""
    cutoff = clock.now() - keep
    removed = 0
    while True:
        async with db.unit_of_work(SYSTEM_MONITORING) as session:
            ids = list(
                (
                    await session.scalars(
                        select(InstanceSample.id)
                        .where(InstanceSample.minute < cutoff)
                        .order_by(InstanceSample.id)
                        .limit(batch)
                    )
                ).all()
            )
            if ids:
                await session.execute(delete(InstanceSample).where(InstanceSample.id.in_(ids)))
        removed += len(ids)
        if len(ids) < batch:
            return removed


class Sampler:
    """The once-a-minute job of one instance: its sample, then pruning."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        checks: Callable[[], Awaitable[dict[str, str]]],
        keep: timedelta,
        window: Window = WINDOW,
    ) -> None:
        self.db = db
        self.clock = clock
        self.checks = checks
        """This instance's readiness checks (``/readyz``'s), recorded with each sample."""
        self.keep = keep
        self.window = window
        self.instance = this_instance(clock)
        self.served = _port is not None
        """Run by ``cmschat serve`` (named by its port), not embedded in another process."""

    async def tick(self) -> None:
        """Write this minute's sample and prune what is past the bound."""
        await record_sample(
            self.db,
            instance=self.instance,
            clock=self.clock,
            taken=self.window.take(),
            checks=await self.checks(),
        )
        await prune_samples(self.db, clock=self.clock, keep=self.keep)

    async def stopped(self) -> None:
        """The last sample of a graceful stop: its traffic since the last tick, and
        ``process=stopped`` so the console shows it stopped rather than silent."""
        await record_sample(
            self.db,
            instance=self.instance,
            clock=self.clock,
            taken=self.window.take(),
            checks=STOPPED,
        )
