"""Counting sign-in attempts per key (account, device, client address), atomically.

An attempt is *taken* before the password is checked: one atomic step compares every key's
count with its limit and, if all are below, counts the attempt on all of them. So however
many requests arrive at once, at most ``limit`` per key and window ever reach bcrypt (a
check-then-record around the hash let 40 parallel guesses through). A successful attempt
then gives its count back (``refund``) or clears the key (``reset``).

Two backends behind one interface: in-process for the embedded default, Redis when several
instances must share the counts. Each key counts in a fixed window that starts with its
first attempt; once a key is at its limit, requests are refused until the window ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis, RedisCluster

from cmschat.clock import Clock
from cmschat.degraded import LocalWhileDown


@dataclass(frozen=True)
class Limit:
    """A key and the number of attempts it allows per window."""

    key: str
    limit: int


@dataclass(frozen=True)
class Taken:
    """The answer to ``take``: go ahead (``retry_after == 0``) or wait."""

    retry_after: int = 0
    """Seconds until the first blocking key's window ends; 0 when the attempt was counted."""
    throttling_started: bool = False
    """True for the first refusal of a blocking key in its window (to record it once)."""
    blocked: tuple[str, ...] = ()
    """The keys at their limit, when refused."""

    @property
    def allowed(self) -> bool:
        """True if the attempt was counted and may go on to the password check."""
        return self.retry_after == 0


class FailureCounter(Protocol):
    """Counts attempts per key within a window; ``take`` is atomic across all its keys."""

    async def take(self, limits: Sequence[Limit], *, window: int) -> Taken:
        """Count one attempt on every key if all are below their limit, else refuse."""
        ...

    async def refund(self, key: str) -> None:
        """Give back one counted attempt on ``key`` (a success that should not count)."""
        ...

    async def reset(self, key: str) -> None:
        """Forget ``key``'s attempts (after a successful login)."""
        ...


class MemoryFailureCounter:
    """In-process counts: right for one process (the embedded default), lost on restart.

    ``take`` has no ``await`` between reading and writing the counts, so on one event loop
    no other request can slip in between: the check and the increment are one step.
    """

    def __init__(self, clock: Clock, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, tuple[int, float]] = {}

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    async def take(self, limits: Sequence[Limit], *, window: int) -> Taken:
        """Count one attempt everywhere, or refuse with the longest wait of a full key."""
        now = self._clock.now().timestamp()
        entries = [(item, self._live(item.key, now)) for item in limits]
        blocked = [(item, e) for item, e in entries if e is not None and e[0] >= item.limit]
        if not blocked:
            for item, entry in entries:
                if entry is None:
                    if len(self._entries) >= self._max_keys:
                        # Under a flood of distinct keys drop the oldest instead of growing.
                        self._entries.pop(next(iter(self._entries)))
                    self._entries[item.key] = (1, now + window)
                else:
                    self._entries[item.key] = (entry[0] + 1, entry[1])
            return Taken()
        started = False
        for item, (count, ends) in blocked:
            # Refusals are counted too, only to tell the first one of the window.
            self._entries[item.key] = (count + 1, ends)
            started = started or count == item.limit
        wait = max(ends for _, (_, ends) in blocked) - now
        return Taken(
            retry_after=max(1, math.ceil(wait)),
            throttling_started=started,
            blocked=tuple(item.key for item, _ in blocked),
        )

    async def refund(self, key: str) -> None:
        """Give back one attempt."""
        entry = self._live(key, self._clock.now().timestamp())
        if entry is not None:
            if entry[0] <= 1:
                del self._entries[key]
            else:
                self._entries[key] = (entry[0] - 1, entry[1])

    async def reset(self, key: str) -> None:
        """Forget ``key``."""
        self._entries.pop(key, None)


# One script, so reading the counts and incrementing them is one atomic step in Redis.
# KEYS: the counters; ARGV[1]: the window in seconds; ARGV[2..]: each key's limit.
# Returns {retry_after, throttling_started, blocked key indexes...}: {0, 0} when counted.
_TAKE = """
local window = tonumber(ARGV[1])
local blocked = {}
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i + 1]) then
    blocked[#blocked + 1] = i
  end
end
if #blocked == 0 then
  for _, key in ipairs(KEYS) do
    redis.call('INCR', key)
    redis.call('EXPIRE', key, window, 'NX')
  end
  return {0, 0}
end
local wait, started = 1, 0
for _, i in ipairs(blocked) do
  local key = KEYS[i]
  local count = redis.call('INCR', key)
  if count == tonumber(ARGV[i + 1]) + 1 then
    started = 1
  end
  local ttl = redis.call('TTL', key)
  if ttl < 0 then
    redis.call('EXPIRE', key, window)
    ttl = window
  end
  if ttl > wait then
    wait = ttl
  end
end
local answer = {wait, started}
for _, i in ipairs(blocked) do
  answer[#answer + 1] = i
end
return answer
"""

_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECR', KEYS[1]) <= 0 then
  redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisFailureCounter:
    """Counts shared by every instance through Redis (one Lua script per attempt).

    While Redis is unreachable each instance counts on its own (see ``degraded``): sign-in
    keeps working, and guessing stays throttled.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        local: MemoryFailureCounter,
        *,
        prefix: str = "cmschat:{loginfail}:",
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._take = redis.register_script(_TAKE)
        self._refund = redis.register_script(_REFUND)
        self._local = local
        self._degraded = LocalWhileDown("sign-in throttling")

    async def take(self, limits: Sequence[Limit], *, window: int) -> Taken:
        """Count one attempt everywhere, or refuse with the longest wait of a full key."""
        return await self._degraded.call(
            lambda: self._take_shared(limits, window),
            lambda: self._local.take(limits, window=window),
        )

    async def _take_shared(self, limits: Sequence[Limit], window: int) -> Taken:
        keys = [self._prefix + item.key for item in limits]
        args = [window, *(item.limit for item in limits)]
        wait, started, *blocked = await self._take(keys=keys, args=args)
        return Taken(
            retry_after=int(wait),
            throttling_started=bool(started),
            blocked=tuple(limits[int(i) - 1].key for i in blocked),
        )

    async def refund(self, key: str) -> None:
        """Give back one attempt."""
        await self._degraded.call(
            lambda: self._refund(keys=[self._prefix + key]), lambda: self._local.refund(key)
        )

    async def reset(self, key: str) -> None:
        """Forget ``key``."""
        await self._degraded.call(
            lambda: self._redis.delete(self._prefix + key), lambda: self._local.reset(key)
        )
