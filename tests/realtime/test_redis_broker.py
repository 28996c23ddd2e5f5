"""The Redis broker between instances: events in batches (one ``PUBLISH`` for what queued
up, not one per event), in order, and still understood by and from the release before the
batches (single events on the base channel), on the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import orjson
import pytest
from redis.asyncio import Redis

from cmschat.events import SESSION_ENDED
from cmschat.realtime.broker import BATCHES, Envelope, RedisBroker
from cmschat.realtime.silence import ANSWER_SECONDS, PING_SECONDS
from cmschat.redis_clients import subscriber_client
from tests import support
from tests.faults.own_redis import OwnRedis, own_redis  # noqa: F401 - fixture

pytestmark = pytest.mark.redis

WAIT = 10.0
T = TypeVar("T")


def message(room_id: int, seq: int, **extra: object) -> Envelope:
    frame = orjson.dumps({"type": "message.created", "room_id": room_id, "seq": seq, **extra})
    return Envelope(room_id=room_id, seq=seq, type="message.created", frame=frame.decode())


class Heard(Generic[T]):
    """What arrived, in order, with a way to wait for a count of it."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def __call__(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    async def count(self, wanted: int) -> list[T]:
        async with asyncio.timeout(WAIT):
            while len(self.items) < wanted:
                self._changed.clear()
                await self._changed.wait()
        return self.items


@pytest.fixture
async def redis(redis_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(support.REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def broker(redis: Redis, channel: str) -> AsyncIterator[tuple[RedisBroker, Heard[Envelope]]]:
    heard: Heard[Envelope] = Heard()
    started = RedisBroker(redis, channel=channel, subscriber=subscriber_client(support.REDIS_URL))
    await started.start(heard, on_reconnect=lambda: None)
    try:
        yield started, heard
    finally:
        await started.close()


@contextlib.asynccontextmanager
async def raw_listener(redis: Redis, channel: str) -> AsyncIterator[Heard[str]]:
    """Every message published on ``channel``, as text, as an older release would read it."""
    heard: Heard[str] = Heard()
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(channel)

        async def listen() -> None:
            async for raw in pubsub.listen():
                if raw.get("type") == "message":
                    heard(raw["data"].decode())

        task = asyncio.create_task(listen())
        try:
            yield heard
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_events_cross_in_batches_in_order(redis: Redis, redis_prefix: str) -> None:
    """Three commits of 100 events each reach the other instance all in order, in at most
    three Redis messages (one per event before the batches: 300)."""
    channel = f"{redis_prefix}:events"
    async with (
        broker(redis, channel) as (one, heard_by_one),
        broker(redis, channel) as (_two, heard_by_two),
        raw_listener(redis, channel + BATCHES) as on_the_wire,
    ):
        sent = [message(room, seq) for seq in range(1, 101) for room in (1, 2, 3)]
        for at in range(0, 300, 100):
            await one.publish(sent[at : at + 100])
        received = await heard_by_two.count(300)
        assert [(e.room_id, e.seq, e.frame) for e in received] == [
            (e.room_id, e.seq, e.frame) for e in sent
        ]
        assert [e.seq for e in heard_by_one.items] == [e.seq for e in sent]  # locally, once
        messages = await on_the_wire.count(1)
        assert 1 <= len(messages) <= 3, len(messages)


async def test_the_previous_release_and_this_one_hear_each_other(
    redis: Redis, redis_prefix: str
) -> None:
    """An instance of the release before the batches publishes single events on the base
    channel: they are delivered here. A revoked session goes there too, in that form, so
    such an instance still closes the session's sockets during a blue/green switch."""
    channel = f"{redis_prefix}:events"
    async with (
        broker(redis, channel) as (this, heard),
        raw_listener(redis, channel) as previous_release_hears,
    ):
        older = message(7, 41, content="from the older release")
        await redis.publish(channel, "0123456789ab\n" + older.encode())
        assert [(e.room_id, e.seq, e.frame) for e in await heard.count(1)] == [(7, 41, older.frame)]

        ended = Envelope(room_id=0, seq=None, type=SESSION_ENDED, frame='{"type":"x"}', user_id=9)
        await this.publish([ended])
        texts = await previous_release_hears.count(2)
        # What that release does with a message: drop the instance id, decode one envelope.
        decoded = Envelope.decode(texts[-1].partition("\n")[2])
        assert (decoded.type, decoded.user_id, decoded.frame) == (SESSION_ENDED, 9, ended.frame)


async def test_an_unreadable_batch_is_dropped_and_the_next_one_delivered(
    redis: Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = f"{redis_prefix}:events"
    async with broker(redis, channel) as (_this, heard):
        caplog.set_level(logging.ERROR, logger="cmschat.realtime.broker")
        await redis.publish(channel + BATCHES, "0123456789ab\n" + '{"r":1}')
        fine = message(1, 1)
        await redis.publish(channel + BATCHES, "0123456789ab\n" + fine.encode())
        assert [e.frame for e in await heard.count(1)] == [fine.frame]
    assert [r.getMessage() for r in caplog.records] == ["dropped an unreadable broker message"]


async def test_a_frame_with_a_newline_survives_a_batch(redis: Redis, redis_prefix: str) -> None:
    """Batches are cut at newlines: a frame holding one (pretty JSON from elsewhere) is sent
    compact, the same JSON."""
    channel = f"{redis_prefix}:events"
    pretty = '{\n  "type": "message.created",\n  "room_id": 1,\n  "seq": 1\n}'
    envelopes = [Envelope(room_id=1, seq=1, type="message.created", frame=pretty), message(1, 2)]
    async with broker(redis, channel) as (one, _), broker(redis, channel) as (_two, heard):
        await one.publish(envelopes)
        received = await heard.count(2)
    assert [orjson.loads(e.frame) for e in received] == [orjson.loads(e.frame) for e in envelopes]


@contextlib.asynccontextmanager
async def subscribed_to_own_redis(
    own_redis: OwnRedis,  # noqa: F811
) -> AsyncIterator[tuple[RedisBroker, asyncio.Event]]:
    """A broker on the suite's own Redis, subscribed as the app's is (``subscriber_client``),
    and an event set each time it reports a reconnection (its connections catch up)."""
    redis = Redis.from_url(own_redis.url)
    reconnected = asyncio.Event()
    started = RedisBroker(redis, channel="events", subscriber=subscriber_client(own_redis.url))
    await started.start(Heard(), on_reconnect=reconnected.set)
    try:
        yield started, reconnected
    finally:
        await started.close()
        await redis.aclose()


async def until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition`` holds (fails after ``within``)."""
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(within):
        while True:
            if condition():
                return asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.05)  # a flag the broker's task sets: nothing to wait on


async def test_a_subscription_gone_silent_is_given_up_and_caught_up_when_back(
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    # A frozen Redis answers nothing and resets nothing, as one cut off by the network: the
    # subscription used to wait on it for as long as TCP kept the connection (hours).
    async with subscribed_to_own_redis(own_redis) as (broker, reconnected):
        own_redis.freeze()
        try:
            noticed = await until(lambda: not broker.connected, PING_SECONDS + ANSWER_SECONDS + 2)
        finally:
            own_redis.thaw()
        await asyncio.wait_for(reconnected.wait(), WAIT)
        assert broker.connected
    assert noticed <= PING_SECONDS + ANSWER_SECONDS + 1


async def test_a_quick_redis_restart_is_reported_so_connections_catch_up(
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    # Back within a few hundred milliseconds: redis-py's retries used to reconnect and
    # resubscribe without a word, and the events published meanwhile were never read back.
    async with subscribed_to_own_redis(own_redis) as (broker, reconnected):
        own_redis.kill()
        own_redis.start()
        await asyncio.wait_for(reconnected.wait(), WAIT)
        assert broker.connected


async def test_a_redis_busy_for_two_seconds_and_more_keeps_its_subscribers(
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    # A fork or a slow command stalls Redis for a second or two: given up after 1 s of
    # unanswered ping, every instance used to resubscribe and catch all its sockets up.
    async with subscribed_to_own_redis(own_redis) as (broker, reconnected):
        stayed: list[bool] = []
        own_redis.freeze()
        try:
            for _ in range(23):  # 2.3 s, looking every 0.1 s
                await asyncio.sleep(0.1)  # the stall's length is what is tested here
                stayed.append(broker.connected)
        finally:
            own_redis.thaw()
        await asyncio.sleep(PING_SECONDS + 0.5)  # a ping answered after the thaw
        assert all(stayed) and broker.connected
        assert not reconnected.is_set()
