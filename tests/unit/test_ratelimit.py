"""Failed-login counting, in-process and shared through the real Redis service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from cmschat.accounts.ratelimit import FailureCounter, MemoryFailureCounter, RedisFailureCounter
from cmschat.clock import FakeClock
from tests import support


async def test_memory_counter_locks_at_the_limit_until_the_window_ends() -> None:
    clock = FakeClock()
    counter = MemoryFailureCounter(clock)
    for _ in range(3):
        assert await counter.retry_after("k", limit=3) == 0
        await counter.add_failure("k", window=60)
    assert await counter.retry_after("k", limit=3) == 60
    clock.advance(seconds=45)
    assert await counter.retry_after("k", limit=3) == 15
    clock.advance(seconds=15)
    assert await counter.retry_after("k", limit=3) == 0


async def test_memory_counter_stays_bounded_under_a_flood_of_keys() -> None:
    counter = MemoryFailureCounter(FakeClock(), max_keys=100)
    for n in range(1000):
        await counter.add_failure(f"address:{n}", window=60)
    assert len(counter._entries) == 100


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(support.REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        support.service_missing("Redis", exc)
    yield client
    await client.aclose()


async def test_redis_counter_is_shared_between_instances(redis: Redis) -> None:
    prefix = f"cmschat-test:{id(redis)}:"
    first: FailureCounter = RedisFailureCounter(redis, prefix=prefix)
    second: FailureCounter = RedisFailureCounter(redis, prefix=prefix)
    try:
        await first.add_failure("account:alice", window=30)
        await second.add_failure("account:alice", window=30)
        assert await first.retry_after("account:alice", limit=2) > 0
        assert 0 < await second.retry_after("account:alice", limit=2) <= 30
        await second.reset("account:alice")
        assert await first.retry_after("account:alice", limit=2) == 0
    finally:
        await redis.delete(prefix + "account:alice")
