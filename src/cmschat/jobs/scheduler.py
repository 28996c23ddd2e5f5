"""In-process scheduling: periodic rounds, and the daily slots of leader-only jobs.

Generic on purpose: it knows no domain. The jobs themselves (the retention purge, the
backups) live with their domain and are started by the composition root (``app.py``, the
CLI), which hands them to ``every``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(minutes=10)
"""A leader renews between batches; one that died frees the job after this long."""


class JobBusy(Exception):
    """Another instance holds the job's lease right now."""


def last_slot(now: datetime, run_at: time) -> datetime:
    """The most recent daily slot at ``run_at`` (UTC) not after ``now``."""
    today = now.replace(hour=run_at.hour, minute=run_at.minute, second=0, microsecond=0)
    return today if today <= now else today - timedelta(days=1)


async def every(
    seconds: float,
    work: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    name: str,
    run_first: bool = False,
) -> None:
    """Run ``work`` every ``seconds`` (and at once, with ``run_first``) until ``stop`` is set.

    Stopped through the event, never cancelled: a round cut off mid-transaction would
    leave a connection (and on SQLite the write lock) behind. A failing round is logged
    and retried next time.
    """
    if not run_first:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
    while not stop.is_set():
        try:
            await work()
        except Exception:
            log.exception("%s failed; retrying next round", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
