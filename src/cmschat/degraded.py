"""Limits that keep working while Redis is away: shared counts, or this process's own.

Sign-in throttling and the send rate count in Redis so that every instance sees the same
numbers. When Redis is unreachable, refusing every login (what happened: 500s even with the
right password) or counting nothing (a free run for password guessing) are both wrong: each
instance counts on its own until Redis answers again, which at worst multiplies a limit by
the number of instances, for as long as the outage lasts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")

REDIS_CALL_SECONDS = 3.0
"""A Redis that answers nobody for this long is taken as stalled."""
LOCAL_SECONDS = 5.0
"""After a failure, calls stay local this long before Redis is tried again: during an
outage only one call in that time waits for Redis to fail."""


class LocalWhileDown:
    """Runs the shared (Redis) version of a call, or the local one when Redis fails.

    A slow call alone does not make Redis "down". Under a burst on a loaded machine (50
    parallel logins, the CPU shared with other work) a call waits for a pooled connection,
    for the event loop and for the CPU itself, and a plain 3 s deadline counted this
    process's own waiting as an outage: the burst was counted locally, past the shared
    limit. So the deadline runs only while Redis is silent to every call *and* this
    process's event loop is not waiting for a CPU: a stalled Redis still shows within
    ``deadline`` seconds, a busy or starved process waits for its answer.
    """

    def __init__(
        self,
        what: str,
        *,
        deadline: float = REDIS_CALL_SECONDS,
        starved: Callable[[], float] | None = None,
    ) -> None:
        self._what = what
        self._deadline = deadline
        self._starved = starved or cpu_wait_seconds
        self.down = False
        self._retry_at = 0.0
        self._answered_at = 0.0

    async def call(
        self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        """``shared()`` while Redis answers (this call or others), else ``local()``."""
        if self.down and time.monotonic() < self._retry_at:
            return await local()
        try:
            result = await self._shared(shared)
        except (RedisError, OSError, TimeoutError) as exc:
            self._retry_at = time.monotonic() + LOCAL_SECONDS
            if not self.down:
                self.down = True
                log.warning(
                    "%s: Redis unreachable (%s); counting in this process until it is back",
                    self._what,
                    type(exc).__name__,
                )
            return await local()
        if self.down:
            self.down = False
            log.warning("%s: Redis is back; counting across instances again", self._what)
        return result

    async def _shared(self, shared: Callable[[], Awaitable[T]]) -> T:
        """The shared call's result; TimeoutError once Redis was silent for the deadline."""
        task = asyncio.ensure_future(shared())
        silent = 0.0
        try:
            while True:
                waited_from, starved_from = time.monotonic(), self._starved()
                done, _ = await asyncio.wait({task}, timeout=max(0.05, self._deadline - silent))
                if done:
                    result = task.result()
                    self._answered_at = time.monotonic()
                    return result
                if self._answered_at >= waited_from:
                    silent = 0.0  # Redis answered another call meanwhile: it is alive
                    continue
                waited = time.monotonic() - waited_from
                silent += max(0.0, waited - (self._starved() - starved_from))
                if silent >= self._deadline:
                    raise TimeoutError(f"no answer from Redis in {self._deadline} s")
        finally:
            if not task.done():
                task.cancel()


def cpu_wait_seconds() -> float:
    """Seconds the calling thread has spent ready to run but waiting for a CPU (Linux).

    From ``/proc/thread-self/schedstat`` (a counter in memory, no disk I/O); 0 where it
    does not exist, so elsewhere the deadline is plain wall-clock time.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
