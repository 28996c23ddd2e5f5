"""Who is online across every instance: a user's first connection anywhere and their last.

A user is online while any instance holds a connection of theirs. Each instance knows only
its own connections (the hub); contacts are told ``online`` when the user's first
connection *anywhere* opens and ``offline`` when their last one anywhere closes, so a user
on two instances is not announced offline when one of those connections ends.

- :class:`LocalPresence`: one instance (the embedded default, in-process fan-out): its hub
  is the whole truth.
- :class:`RedisPresence`: several instances sharing Redis. Per user, a sorted set of the
  instances holding a connection, each claim scored by when it expires; a set of the users
  online; an index of every claim by expiry. Each instance refreshes its claims every
  third of the TTL. The claims of one that died (kill -9, power loss, cut off from Redis)
  expire, and whichever instance sweeps first removes them and, when one was the user's
  last, tells their contacts: within the TTL plus one sweep. Every change is one Lua
  script, so two instances never both announce the same change; time is Redis's own
  (``TIME``), not each host's clock. All keys share one hash tag (``{presence}``): on
  Redis Cluster the scripts run on the one node that holds them.

Presence stays a hint (docs/realtime.md): while Redis is unreachable each instance answers
from its own connections, and its claims are renewed, with ``online`` said again for users
whose claims had lapsed, at the first refresh after Redis is back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterable
from typing import Protocol

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from cmschat.degraded import LocalWhileDown
from cmschat.realtime.connections import Hub

CHUNK = 500
"""Claims renewed or expired per script call: one call never holds Redis for long."""
SWEEP_ROUNDS = 20
"""Chunks of lapsed claims one sweep takes at most (10,000 users of a dead instance)."""
log = logging.getLogger(__name__)

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: user's claims, users online, claims by expiry. ARGV: instance, TTL (ms), user id.
# Returns 1 when the user was offline everywhere until now.
_ARRIVE = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('ZADD', KEYS[3], now + ARGV[2], ARGV[3] .. ' ' .. ARGV[1])
return redis.call('SADD', KEYS[2], ARGV[3])
"""
)

# KEYS: as _ARRIVE. ARGV: instance, user id. Returns 1 when no live claim is left.
_LEAVE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2] .. ' ' .. ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
return redis.call('SREM', KEYS[2], ARGV[2])
"""
)

# KEYS: users online, claims by expiry, then one user's claims per user. ARGV: instance,
# TTL (ms), then the user ids in KEYS' order. Returns the users that were offline.
_RENEW = (
    _NOW
    + """
local back = {}
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], now + ARGV[2], ARGV[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  redis.call('ZADD', KEYS[2], now + ARGV[2], ARGV[i] .. ' ' .. ARGV[1])
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then back[#back + 1] = ARGV[i] end
end
return back
"""
)

# KEYS: claims by expiry. ARGV: how many. The claims past their expiry ("user instance").
_DUE = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])\n"

# KEYS: as _ARRIVE. ARGV: instance, user id. Removes one lapsed claim (unless renewed
# meanwhile); returns 1 when it was the user's last live one.
_LAPSE = (
    _NOW
    + """
local claim = ARGV[2] .. ' ' .. ARGV[1]
local due = redis.call('ZSCORE', KEYS[3], claim)
if not due or tonumber(due) > now then return 0 end
redis.call('ZREM', KEYS[3], claim)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
return redis.call('SREM', KEYS[2], ARGV[2])
"""
)


class Presence(Protocol):
    """Presence as seen by one instance. ``arrived`` is called at each connection's
    opening (after the hub holds it), ``left`` when this instance's last connection of a
    user has closed (the hub holds none)."""

    async def arrived(self, user_id: int) -> bool:
        """True when the user was offline everywhere (contacts are to be told)."""
        ...

    async def left(self, user_id: int) -> bool:
        """True when the user is now offline everywhere."""
        ...

    async def online_among(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` online on any instance, in the given order."""
        ...

    async def count(self) -> int:
        """Users online on any instance."""
        ...

    async def renew(self) -> list[int]:
        """Keep this instance's claims alive; the users that had been taken as offline
        (those renewed before a failure, if Redis fails midway)."""
        ...

    async def lapsed(self) -> list[int]:
        """Users whose last instance stopped renewing (died): now offline everywhere (those
        swept before a failure, if Redis fails midway)."""
        ...


class LocalPresence:
    """One instance: its own connections are everyone's."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def arrived(self, user_id: int) -> bool:
        return len(self.hub.connections_of(user_id)) == 1

    async def left(self, user_id: int) -> bool:
        return not self.hub.connections_of(user_id)

    async def online_among(self, user_ids: Iterable[int]) -> list[int]:
        return [u for u in user_ids if self.hub.connections_of(u)]

    async def count(self) -> int:
        return self.hub.online_users()

    async def renew(self) -> list[int]:
        return []

    async def lapsed(self) -> list[int]:
        return []


def instance_name() -> str:
    """This process, uniquely: a restarted process never takes over a dead one's claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RedisPresence:
    """Several instances: claims in Redis, renewed by their instance, swept when lapsed."""

    def __init__(
        self, redis: Redis | RedisCluster, hub: Hub, *, prefix: str, ttl_seconds: float
    ) -> None:
        keys = f"{prefix}:{{presence}}"  # the hash tag: one Redis Cluster slot for all
        self.instance = instance_name()
        self._online = f"{keys}:online"
        self._by_expiry = f"{keys}:expiry"
        self._claims = f"{keys}:user:"
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._hub = hub
        self._local = LocalPresence(hub)
        self._degraded = LocalWhileDown("presence")
        self._arrive = redis.register_script(_ARRIVE)
        self._leave = redis.register_script(_LEAVE)
        self._renew = redis.register_script(_RENEW)
        self._due = redis.register_script(_DUE)
        self._lapse = redis.register_script(_LAPSE)
        self._redis = redis

    def _keys(self, user_id: int) -> list[str]:
        return [f"{self._claims}{user_id}", self._online, self._by_expiry]

    async def arrived(self, user_id: int) -> bool:
        async def shared() -> bool:
            args: list[str | int] = [self.instance, self._ttl_ms, user_id]
            return bool(await self._arrive(keys=self._keys(user_id), args=args))

        return await self._degraded.call(shared, lambda: self._local.arrived(user_id))

    async def left(self, user_id: int) -> bool:
        async def shared() -> bool:
            args: list[str | int] = [self.instance, user_id]
            return bool(await self._leave(keys=self._keys(user_id), args=args))

        return await self._degraded.call(shared, lambda: self._local.left(user_id))

    async def online_among(self, user_ids: Iterable[int]) -> list[int]:
        wanted = list(user_ids)
        if not wanted:
            return []

        async def shared() -> list[int]:
            flags = await self._redis.smismember(self._online, wanted)
            return [u for u, flag in zip(wanted, flags, strict=True) if flag]

        return await self._degraded.call(shared, lambda: self._local.online_among(wanted))

    async def count(self) -> int:
        async def shared() -> int:
            return int(await self._redis.scard(self._online))

        return await self._degraded.call(shared, self._local.count)

    async def renew(self) -> list[int]:
        back: list[int] = []
        try:
            users = self._hub.user_ids()
            for start in range(0, len(users), CHUNK):
                chunk = users[start : start + CHUNK]
                keys = [self._online, self._by_expiry] + [f"{self._claims}{u}" for u in chunk]
                args: list[str | int] = [self.instance, self._ttl_ms, *chunk]
                renewed = {int(u) for u in await self._renew(keys=keys, args=args)}
                # A user whose last connection closed while this ran may have been claimed
                # again after their ``left``: take that claim back (said nothing of it).
                for user_id in chunk:
                    if not self._hub.connections_of(user_id):
                        renewed.discard(user_id)
                        await self._leave(keys=self._keys(user_id), args=[self.instance, user_id])
                back += sorted(renewed)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("could not renew presence claims (%s)", type(error).__name__)
        return back

    async def lapsed(self) -> list[int]:
        gone: list[int] = []
        try:
            for _ in range(SWEEP_ROUNDS):
                claims = await self._due(keys=[self._by_expiry], args=[CHUNK])
                for claim in claims:
                    user, _, instance = claim.decode().partition(" ")
                    if await self._lapse(keys=self._keys(int(user)), args=[instance, user]):
                        gone.append(int(user))
                if len(claims) < CHUNK:
                    break
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("could not sweep lapsed presence claims (%s)", type(error).__name__)
        return gone
