"""How fast one user may send messages: a token bucket per user, over every transport.

A user holds up to ``burst`` tokens, refilled at ``rate`` per second; each new message
takes one. A full bucket lets a fast typist or a client flushing its outbox after a
reconnect through at once; a flood is held to ``rate`` messages per second. In-process
for one instance, in Redis (one Lua script, so take-and-refill is atomic) when several
instances must share each user's budget.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from redis.asyncio import Redis, RedisCluster

from cmschat.clock import Clock
from cmschat.degraded import LocalWhileDown
from cmschat.errors import RateLimited

log = logging.getLogger(__name__)


class SendLimiter(Protocol):
    """Takes one token from a user's bucket."""

    async def take(self, user_id: int) -> float:
        """0 if the user may send now (a token was taken), else seconds until they may."""
        ...


def _refill(
    tokens: float, updated: float, now: float, *, rate: float, burst: int
) -> tuple[float, float]:
    if now > updated:  # a clock that stepped back refills nothing
        return min(float(burst), tokens + (now - updated) * rate), now
    return tokens, updated


class MemorySendLimiter:
    """Buckets in this process: right for one instance."""

    def __init__(self, clock: Clock, *, rate: float, burst: int, max_users: int = 100_000) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._max_users = max_users
        self._buckets: dict[int, tuple[float, float]] = {}

    async def take(self, user_id: int) -> float:
        """0 if a token was taken, else seconds until one is there."""
        now = self._clock.now().timestamp()
        bucket = self._buckets.pop(user_id, None)
        if bucket is None:
            bucket = (float(self._burst), now)
            if len(self._buckets) >= self._max_users:
                # Oldest first: a full bucket is what a forgotten user gets back anyway.
                self._buckets.pop(next(iter(self._buckets)))
        tokens, updated = _refill(*bucket, now, rate=self._rate, burst=self._burst)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[user_id] = (tokens, updated)
        return wait


# KEYS[1]: the user's bucket; ARGV: rate, burst, now (seconds). Returns the wait as text
# (Lua numbers come back from Redis as integers).
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisSendLimiter:
    """Buckets in Redis, shared by every instance; time from the app's clock.

    While Redis is unreachable each instance keeps its own buckets (see ``degraded``).
    """

    def __init__(
        self, redis: Redis | RedisCluster, clock: Clock, *, rate: float, burst: int, prefix: str
    ) -> None:
        self._script = redis.register_script(TAKE_SCRIPT)
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._prefix = prefix
        self._local = MemorySendLimiter(clock, rate=rate, burst=burst)
        self._degraded = LocalWhileDown("send rate")

    async def take(self, user_id: int) -> float:
        """0 if a token was taken, else seconds until one is there."""
        return await self._degraded.call(
            lambda: self._take_shared(user_id), lambda: self._local.take(user_id)
        )

    async def _take_shared(self, user_id: int) -> float:
        now = self._clock.now().timestamp()
        wait = await self._script(
            keys=[f"{self._prefix}{user_id}"], args=[self._rate, self._burst, repr(now)]
        )
        return float(wait)


async def check_send_rate(limiter: SendLimiter | None, *, user_id: int) -> None:
    """Take a token for one message, or raise ``RateLimited`` with the wait in seconds."""
    if limiter is None:
        return
    wait = await limiter.take(user_id)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise RateLimited(
            f"you are sending messages too fast; try again in {seconds} s", retry_after=seconds
        )
