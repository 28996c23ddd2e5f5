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
"""A stalled Redis holds a call up at most this long (far above a busy pool's wait)."""
LOCAL_SECONDS = 5.0
"""After a failure, calls stay local this long before Redis is tried again: during an
outage only one call in that time waits for Redis to fail."""


class LocalWhileDown:
    """Runs the shared (Redis) version of a call, or the local one when Redis fails."""

    def __init__(self, what: str) -> None:
        self._what = what
        self.down = False
        self._retry_at = 0.0

    async def call(
        self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        """``shared()`` if Redis answers in time, else ``local()``."""
        if self.down and time.monotonic() < self._retry_at:
            return await local()
        try:
            async with asyncio.timeout(REDIS_CALL_SECONDS):
                result = await shared()
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
