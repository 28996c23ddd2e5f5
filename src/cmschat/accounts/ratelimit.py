"""Counting failed logins per account and per client address.

Two backends behind one interface: in-process for the embedded default, Redis when
several instances must share the counts. Each key counts failures in a fixed window that
starts with its first failure; at the limit the caller is refused until the window ends.
"""

from __future__ import annotations

import math
from typing import Protocol

from redis.asyncio import Redis

from cmschat.clock import Clock


class FailureCounter(Protocol):
    """Counts failures per key within a window."""

    async def retry_after(self, key: str, *, limit: int) -> int:
        """Seconds until ``key`` may try again, or 0 if it is below ``limit``."""
        ...

    async def add_failure(self, key: str, *, window: int) -> None:
        """Count one failure for ``key``; the window starts at its first failure."""
        ...

    async def reset(self, key: str) -> None:
        """Forget ``key``'s failures (after a successful login)."""
        ...


class MemoryFailureCounter:
    """In-process counts: right for one process, lost on restart."""

    def __init__(self, clock: Clock, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, tuple[int, float]] = {}

    def _live(self, key: str) -> tuple[int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= self._clock.now().timestamp():
            del self._entries[key]
            return None
        return entry

    async def retry_after(self, key: str, *, limit: int) -> int:
        """Seconds until ``key`` may try again, or 0."""
        entry = self._live(key)
        if entry is None or entry[0] < limit:
            return 0
        return math.ceil(entry[1] - self._clock.now().timestamp())

    async def add_failure(self, key: str, *, window: int) -> None:
        """Count one failure."""
        entry = self._live(key)
        if entry is None:
            if len(self._entries) >= self._max_keys:
                # Under a flood of distinct keys drop the oldest instead of growing forever.
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (1, self._clock.now().timestamp() + window)
        else:
            self._entries[key] = (entry[0] + 1, entry[1])

    async def reset(self, key: str) -> None:
        """Forget ``key``."""
        self._entries.pop(key, None)


class RedisFailureCounter:
    """Counts shared by every instance through Redis (INCR with an expiry)."""

    def __init__(self, redis: Redis, *, prefix: str = "cmschat:loginfail:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def retry_after(self, key: str, *, limit: int) -> int:
        """Seconds until ``key`` may try again, or 0."""
        name = self._prefix + key
        count = await self._redis.get(name)
        if count is None or int(count) < limit:
            return 0
        ttl = await self._redis.ttl(name)
        return max(1, int(ttl))

    async def add_failure(self, key: str, *, window: int) -> None:
        """Count one failure; the first one sets the window."""
        name = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, window, nx=True)
            await pipe.execute()

    async def reset(self, key: str) -> None:
        """Forget ``key``."""
        await self._redis.delete(self._prefix + key)
