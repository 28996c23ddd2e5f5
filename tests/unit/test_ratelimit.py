"""Attempt counting, in-process and shared through the real Redis service."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from cmschat.accounts.ratelimit import (
    FailureCounter,
    Limit,
    MemoryFailureCounter,
    RedisFailureCounter,
)
from cmschat.clock import FakeClock
from tests import support
from tests.processes import free_port


async def test_memory_counter_locks_at_the_limit_until_the_window_ends() -> None:
    clock = FakeClock()
    counter = MemoryFailureCounter(clock)
    key = [Limit("k", 3)]
    for _ in range(3):
        assert (await counter.take(key, window=60)).allowed
    refused = await counter.take(key, window=60)
    assert (refused.retry_after, refused.throttling_started, refused.blocked) == (60, True, ("k",))
    clock.advance(seconds=45)
    again = await counter.take(key, window=60)
    assert (again.retry_after, again.throttling_started) == (15, False)
    clock.advance(seconds=15)
    assert (await counter.take(key, window=60)).allowed


async def test_memory_counter_stays_bounded_under_a_flood_of_keys() -> None:
    counter = MemoryFailureCounter(FakeClock(), max_keys=100)
    for n in range(1000):
        await counter.take([Limit(f"address:{n}", 5)], window=60)
    assert len(counter._entries) == 100


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[list[FailureCounter]]:
    """Two counters that share their counts (two instances), in-process or through Redis."""
    if request.param == "memory":
        shared = MemoryFailureCounter(FakeClock())
        yield [shared, shared]
        return
    # A bounded pool, as the app has: 50 parallel takes share 10 connections (opening 50 at
    # once timed out on a loaded machine), still several at a time.
    redis = Redis.from_pool(BlockingConnectionPool.from_url(support.REDIS_URL, max_connections=10))
    try:
        await redis.ping()
    except Exception as exc:
        await redis.aclose()
        support.service_missing("Redis", exc)
    prefix = f"test-{secrets.token_hex(6)}:loginfail:"
    try:
        yield [
            RedisFailureCounter(redis, MemoryFailureCounter(FakeClock()), prefix=prefix)
            for _ in range(2)
        ]
    finally:
        await redis.delete(*[key async for key in redis.scan_iter(prefix + "*")] or ["-"])
        await redis.aclose()


async def test_parallel_takes_never_pass_more_than_the_limit(
    counters: list[FailureCounter],
) -> None:
    limits = [Limit("account:alice", 5), Limit("address:198.51.100.9", 20)]
    answers = await asyncio.gather(*(counters[n % 2].take(limits, window=30) for n in range(50)))
    assert sum(answer.allowed for answer in answers) == 5
    refused = [answer for answer in answers if not answer.allowed]
    assert all(0 < answer.retry_after <= 30 for answer in refused)
    assert all(answer.blocked == ("account:alice",) for answer in refused)
    # Only the first refusal of the window says so: it is recorded once, not 45 times.
    assert sum(answer.throttling_started for answer in refused) == 1


async def test_a_refused_attempt_spends_nothing_on_the_keys_still_below_their_limit(
    counters: list[FailureCounter],
) -> None:
    first, second = counters
    for _ in range(2):
        assert (await first.take([Limit("account:bob", 2)], window=30)).allowed
    shared = [Limit("account:bob", 2), Limit("address:a", 3)]
    assert not (await second.take(shared, window=30)).allowed
    for _ in range(3):
        assert (await first.take([Limit("address:a", 3)], window=30)).allowed


async def test_refund_gives_one_attempt_back_and_reset_all(counters: list[FailureCounter]) -> None:
    first, second = counters
    limit = [Limit("address:b", 2)]
    for _ in range(2):
        assert (await first.take(limit, window=30)).allowed
    await second.refund("address:b")
    assert (await first.take(limit, window=30)).allowed
    assert not (await second.take(limit, window=30)).allowed
    await second.reset("address:b")
    assert (await first.take(limit, window=30)).allowed
    await first.refund("address:none-such")  # nothing to give back: no error, no key
    assert (await first.take([Limit("address:none-such", 1)], window=30)).allowed


async def test_forty_guesses_at_once_while_redis_is_down_still_pass_only_the_limit() -> None:
    """An unreachable Redis: the count moves into the process, it never opens up."""
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    counter = RedisFailureCounter(redis, MemoryFailureCounter(FakeClock()), prefix="down:")
    limits = [Limit("account:alice", 5)]
    try:
        results = await asyncio.gather(*(counter.take(limits, window=60) for _ in range(40)))
    finally:
        await redis.aclose()
    assert sum(result.allowed for result in results) == 5
