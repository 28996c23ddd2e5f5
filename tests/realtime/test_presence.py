"""Presence across instances (issue 18 point 3), on the real Redis and on a Redis Cluster
the tests start: each ``RedisPresence`` on one prefix is one instance, with its own hub of
connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis, RedisCluster

from cmschat.realtime.connections import Connection, Hub
from cmschat.realtime.presence import LocalPresence, RedisPresence
from tests import support
from tests.faults.own_redis_cluster import OwnRedisCluster, shared_redis_cluster  # noqa: F401
from tests.processes import free_port

WITHIN = 10.0


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Redis]:
    """One Redis, or a cluster (every presence key in one hash slot: scripts must work)."""
    client: Redis | RedisCluster
    if request.param == "redis-cluster":
        cluster: OwnRedisCluster = request.getfixturevalue("shared_redis_cluster")
        client = RedisCluster.from_url(cluster.url)
    else:
        client = Redis.from_url(support.REDIS_URL)
    yield client  # type: ignore[misc]  # the calls used here behave alike on both
    await client.aclose()


def instance(redis: Redis, prefix: str, ttl: float = 30) -> tuple[RedisPresence, Hub]:
    hub = Hub()
    return RedisPresence(redis, hub, prefix=prefix, ttl_seconds=ttl), hub


def connect(hub: Hub, user_id: int) -> Connection:
    connection = Connection(user_id=user_id, queue_size=10)
    hub.add(connection, set())
    return connection


async def test_a_user_on_two_instances_is_online_until_the_last_connection_anywhere_closes(
    redis: Redis, redis_prefix: str
) -> None:
    (one, hub_one), (two, hub_two) = instance(redis, redis_prefix), instance(redis, redis_prefix)
    on_one, on_two = connect(hub_one, 7), connect(hub_two, 7)

    assert await one.arrived(7) is True  # first anywhere: contacts are told
    assert await two.arrived(7) is False  # already online on instance one
    assert await two.online_among([8, 7]) == [7]
    assert await one.count() == await two.count() == 1

    hub_one.remove(on_one)
    assert await one.left(7) is False  # still connected to instance two
    assert await one.online_among([7]) == [7]
    hub_two.remove(on_two)
    assert await two.left(7) is True
    assert await one.online_among([7]) == []
    assert await two.count() == 0


async def test_first_and_last_connections_racing_on_five_instances_are_announced_once(
    redis: Redis, redis_prefix: str
) -> None:
    instances = [instance(redis, redis_prefix) for _ in range(5)]
    for _, hub in instances:
        connect(hub, 3)
    arrivals = await asyncio.gather(*(presence.arrived(3) for presence, _ in instances))
    assert sorted(arrivals) == [False] * 4 + [True]
    departures = await asyncio.gather(*(presence.left(3) for presence, _ in instances))
    assert sorted(departures) == [False] * 4 + [True]


async def test_a_dead_instances_users_go_offline_once_when_its_claims_lapse(
    redis: Redis, redis_prefix: str
) -> None:
    ttl = 0.5
    (dead, dead_hub), (alive, alive_hub) = (
        instance(redis, redis_prefix, ttl),
        instance(redis, redis_prefix, ttl),
    )
    for user_id in (7, 8):
        connect(dead_hub, user_id)
        await dead.arrived(user_id)
    connect(alive_hub, 8)  # 8 is on both instances
    await alive.arrived(8)
    died = time.monotonic()  # ``dead`` renews nothing from here on

    gone: list[int] = []
    while not gone:
        assert time.monotonic() - died < WITHIN, "the dead instance's claims never lapsed"
        await alive.renew()
        gone += await alive.lapsed()
        await asyncio.sleep(ttl / 10)
    lapsed_after = time.monotonic() - died
    assert gone == [7]
    assert lapsed_after >= ttl * 0.9  # not before its claims ran out (Redis's clock)
    assert await alive.online_among([7, 8]) == [8]
    assert await alive.lapsed() == []  # swept once: no second "offline"

    # The instance was only stalled: its next renewal says user 7 is back.
    assert await dead.renew() == [7]
    assert await alive.online_among([7, 8]) == [7, 8]


async def test_claims_renewed_in_time_never_lapse(redis: Redis, redis_prefix: str) -> None:
    ttl = 2.0  # renewed every tenth of it: a stall of most of it still passes
    (one, hub), (sweeper, _) = instance(redis, redis_prefix, ttl), instance(redis, redis_prefix)
    connect(hub, 5)
    await one.arrived(5)
    until = time.monotonic() + ttl * 1.5
    while time.monotonic() < until:
        assert await one.renew() == []
        assert await sweeper.lapsed() == []
        await asyncio.sleep(ttl / 10)
    assert await sweeper.online_among([5]) == [5]


async def test_a_renewal_never_leaves_a_claim_for_a_user_who_has_gone(
    redis: Redis, redis_prefix: str
) -> None:
    """The last connection closes while a renewal runs: the renewal must not keep the user
    online (the endpoint's ``left`` may reach Redis before the renewal's script)."""
    (one, hub), (other, _) = instance(redis, redis_prefix), instance(redis, redis_prefix)
    connection = connect(hub, 6)
    assert await one.arrived(6) is True
    real_user_ids = hub.user_ids
    hub.remove(connection)
    assert await one.left(6) is True  # told offline already
    hub.user_ids = lambda: [6]  # type: ignore[method-assign] # taken before the close
    try:
        assert await one.renew() == []  # not announced online again...
    finally:
        hub.user_ids = real_user_ids  # type: ignore[method-assign]
    assert await other.online_among([6]) == []  # ...and not online
    assert await other.lapsed() == []


async def test_without_redis_an_instance_answers_from_its_own_connections() -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    hub = Hub()
    presence = RedisPresence(unreachable, hub, prefix="down", ttl_seconds=30)
    try:
        connection = connect(hub, 4)
        assert await presence.arrived(4) is True
        assert await presence.online_among([4, 5]) == [4]
        assert await presence.count() == 1
        assert await presence.renew() == []
        hub.remove(connection)
        assert await presence.left(4) is True
        assert await presence.online_among([4]) == []
    finally:
        await unreachable.aclose()


async def test_one_instance_alone_is_its_own_connections() -> None:
    hub = Hub()
    presence = LocalPresence(hub)
    connection = connect(hub, 2)
    assert await presence.arrived(2) is True
    assert await presence.online_among([1, 2]) == [2]
    assert await presence.count() == 1
    hub.remove(connection)
    assert await presence.left(2) is True
    assert await presence.online_among([2]) == []
    assert await presence.renew() == await presence.lapsed() == []
