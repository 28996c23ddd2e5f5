"""The broker on a Redis Cluster (three masters, three replicas, started by the tests):
room events on shard channels each instance subscribes to only while its connections
follow a room there; what every instance must hear on the control channel; every
(re)subscription followed by a catch-up from the database; a master killed and replaced."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from pydantic import ValidationError
from redis.asyncio import RedisCluster

from cmschat.accounts.ratelimit import Limit, MemoryFailureCounter, RedisFailureCounter
from cmschat.chat.ratelimit import RedisSendLimiter
from cmschat.clock import SystemClock
from cmschat.events import SESSION_ENDED
from cmschat.realtime import shard_subscriber
from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import (
    CATCH_UP,
    CLOSE_SESSION_ENDED,
    Connection,
    Hub,
    caught_up,
)
from cmschat.realtime.sharded_broker import ShardedBroker
from cmschat.redis_clients import node_clients, redis_broker, redis_client
from cmschat.settings import Settings
from tests.faults.own_redis_cluster import (  # noqa: F401 - fixtures
    OwnRedisCluster,
    own_redis_cluster,
    shared_redis_cluster,
)
from tests.observability.metrics_support import value

pytestmark = pytest.mark.redis

WAIT = 15.0
SHARDS = 64
CHANNEL = "test:events"


def message(room_id: int, seq: int) -> Envelope:
    frame = orjson.dumps({"type": "message.created", "room_id": room_id, "seq": seq})
    return Envelope(room_id=room_id, seq=seq, type="message.created", frame=frame.decode())


class Instance:
    """A hub and its sharded broker: one app instance's real-time part."""

    def __init__(self, cluster: RedisCluster, url: str) -> None:
        self.hub = Hub()
        self.broker = ShardedBroker(
            cluster, node_clients(url), self.hub, channel=CHANNEL, shards=SHARDS
        )
        self.heard: list[Envelope] = []
        self.reconnects = 0
        self._changed = asyncio.Event()

    def _deliver(self, envelope: Envelope) -> None:
        self.heard.append(envelope)
        self._changed.set()
        self.hub.deliver(envelope)

    def _reconnected(self) -> None:
        self.reconnects += 1
        self.hub.catch_up_all()

    async def start(self) -> None:
        await self.broker.start(self._deliver, self._reconnected)

    def connect(self, user_id: int, rooms: set[int]) -> Connection:
        connection = Connection(user_id=user_id, queue_size=10_000)
        for room_id in rooms:
            connection.delivered[room_id] = 0
        self.hub.add(connection, rooms)
        return connection

    async def until(self, condition: object, what: str) -> None:
        """Wait (on deliveries, or polling the subscriber's state) until ``condition()``."""
        assert callable(condition)
        async with asyncio.timeout(WAIT):
            while not condition():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):  # subscriptions change without a delivery
                        await self._changed.wait()
        assert condition(), what


def queued(connection: Connection) -> list[tuple[str, int, int | None]]:
    return [(e.type, e.room_id, e.seq) for e in connection.queue or ()]


def session_ended(user_id: int) -> Envelope:
    """A revocation of every session of ``user_id``, as the services publish it."""
    frame = '{"type":"session.ended","reason":"signed out"}'
    return Envelope(room_id=0, seq=None, type=SESSION_ENDED, frame=frame, only_user_ids=(user_id,))


def heard(instance: Instance) -> list[tuple[int, int | None]]:
    return [(e.room_id, e.seq) for e in instance.heard]


def cluster_of(own: OwnRedisCluster) -> RedisCluster:
    """A client built as the app builds it (time-outs: a frozen node must not hang it)."""
    client = redis_client(Settings(redis_cluster=True, redis_url=own.url))
    assert isinstance(client, RedisCluster)
    return client


def take_all(connection: Connection) -> None:
    """Empty the queue as the connection's sender would (a catch-up taken is done)."""
    while (envelope := connection.take()) is not None:
        if envelope.type == CATCH_UP:
            caught_up(connection, envelope.room_id)


@pytest.fixture
def cluster_client(shared_redis_cluster: OwnRedisCluster) -> Iterator[RedisCluster]:  # noqa: F811
    yield cluster_of(shared_redis_cluster)


@contextlib.asynccontextmanager
async def instances(cluster: RedisCluster, url: str, count: int) -> AsyncIterator[list[Instance]]:
    started = [Instance(cluster, url) for _ in range(count)]
    try:
        for instance in started:
            await instance.start()
        yield started
    finally:
        for instance in started:
            await instance.broker.close()
        await cluster.aclose()


async def test_an_instance_hears_only_the_shards_its_connections_follow(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    async with instances(cluster_client, shared_redis_cluster.url, 2) as (one, two):
        ben = two.connect(user_id=2, rooms={1})
        followed = two.broker.shard_channel(1)
        await two.until(
            lambda: two.broker.subscribed_channels() == {CHANNEL + ":control", followed},
            "subscribed",
        )
        await one.broker.publish(
            [message(1, 1), message(2, 1), message(1 + SHARDS, 1), message(1, 2)]
        )
        await two.until(
            lambda: [(e.room_id, e.seq) for e in two.heard] == [(1, 1), (1 + SHARDS, 1), (1, 2)],
            "heard",
        )
        # Room 2's shard has no subscriber anywhere but on instance one, which published it.
        assert shared_redis_cluster.shard_subscribers(two.broker.shard_channel(2)) == 0
        assert shared_redis_cluster.shard_subscribers(followed) == 1
        assert [(t, r, s) for t, r, s in queued(ben)] == [
            (CATCH_UP, 1, None),
            ("message.created", 1, 1),
            ("message.created", 1, 2),
        ]


async def test_what_every_instance_must_hear_goes_on_the_control_channel(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    async with instances(cluster_client, shared_redis_cluster.url, 2) as (one, two):
        ben = two.connect(user_id=2, rooms=set())
        joined = Envelope(
            room_id=5, seq=3, type="member.joined", frame='{"type":"member.joined"}', user_id=2
        )
        presence = Envelope(
            room_id=0, seq=None, type="presence", frame='{"type":"presence"}', only_user_ids=(2,)
        )
        await one.broker.publish([joined, presence])
        # Ben's connection follows the room from its join on, and reads back what may have
        # passed it by meanwhile; the instance subscribes to the room's shard.
        await two.until(lambda: len(queued(ben)) >= 3, "joined")
        assert queued(ben)[:3] == [
            ("member.joined", 5, 3),
            (CATCH_UP, 5, None),
            ("presence", 0, None),
        ]
        shard = two.broker.shard_channel(5)
        await two.until(lambda: shard in two.broker.subscribed_channels(), "subscribed")
        ended = session_ended(2)
        await one.broker.publish([ended])
        await two.until(lambda: ben.ended, "ended")
        assert ben.close_code == CLOSE_SESSION_ENDED
        assert two.reconnects == 0


async def test_a_shard_nobody_follows_any_more_is_dropped_after_a_while(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    linger = 0.3
    monkeypatch.setattr(shard_subscriber, "LINGER_SECONDS", linger)
    async with instances(cluster_client, shared_redis_cluster.url, 2) as (one, two):
        shard = one.broker.shard_channel(9)
        ann = one.connect(user_id=1, rooms={9})
        await one.until(lambda: shard in one.broker.subscribed_channels(), "subscribed")
        one.hub.remove(ann)
        # Followed again within the linger: the subscription is kept past it, never
        # renewed (so no catch-up), and still carries the room's events.
        ann = one.connect(user_id=1, rooms={9})
        await asyncio.sleep(2 * linger)  # the linger's length is what is tested here
        await two.broker.publish([message(9, 1)])
        await one.until(lambda: (9, 1) in [(e.room_id, e.seq) for e in one.heard], "heard")
        assert queued(ann) == [("message.created", 9, 1)]
        one.hub.remove(ann)
        left = time.monotonic()
        await one.until(lambda: shared_redis_cluster.shard_subscribers(shard) == 0, "dropped")
        assert time.monotonic() - left >= linger
        assert shard not in one.broker.subscribed_channels()


async def test_each_room_s_events_arrive_in_order_across_many_batches(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    rooms = range(100, 110)
    async with instances(cluster_client, shared_redis_cluster.url, 2) as (one, two):
        two.connect(user_id=2, rooms=set(rooms))
        wanted = {two.broker.shard_channel(room) for room in rooms}
        await two.until(lambda: wanted <= two.broker.subscribed_channels(), "subscribed")
        sent = [message(room, seq) for seq in range(1, 201) for room in rooms]
        for at in range(0, len(sent), 50):
            await one.broker.publish(sent[at : at + 50])
        await two.until(lambda: len(two.heard) >= len(sent), "all heard")
        for room in rooms:
            assert [e.seq for e in two.heard if e.room_id == room] == list(range(1, 201))
        assert len(two.heard) == len(sent)


async def test_shared_counts_keep_their_keys_in_one_slot(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    """Sign-in throttling counts several keys in one script: on a cluster they must share a
    hash slot (a CROSSSLOT error otherwise). The send rate's buckets work there too."""
    counter = RedisFailureCounter(cluster_client, MemoryFailureCounter(SystemClock()))
    try:
        limits = [Limit("account:ann", 2), Limit("address:10.0.0.1", 5)]
        assert (await counter.take(limits, window=60)).retry_after == 0
        assert (await counter.take(limits, window=60)).retry_after == 0
        assert (await counter.take(limits, window=60)).retry_after > 0
        assert await cluster_client.get("cmschat:{loginfail}:account:ann") == b"3"
        sends = RedisSendLimiter(
            cluster_client, SystemClock(), rate=0.001, burst=2, prefix="cmschat:sendrate:"
        )
        assert [await sends.take(7) > 0 for _ in range(3)] == [False, False, True]
    finally:
        await cluster_client.aclose()


async def test_many_limit_checks_at_once_on_a_cluster_are_all_counted_there(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    """40 sign-in attempts at once get exactly the limit, and 300 sends at once on one
    master are all counted in Redis (the client's pool raised past 100 connections, and
    the limits fell back to each process's own counts)."""
    await cluster_client.initialize()  # as the app's start does (the broker's)
    counter = RedisFailureCounter(cluster_client, MemoryFailureCounter(SystemClock()))
    sends = RedisSendLimiter(
        cluster_client, SystemClock(), rate=0.001, burst=1000, prefix="cmschat:{burst}:"
    )
    try:
        limits = [Limit("account:cho", 5), Limit("address:10.0.0.9", 100)]
        taken = await asyncio.gather(*(counter.take(limits, window=60) for _ in range(40)))
        assert sum(answer.retry_after == 0 for answer in taken) == 5
        assert await cluster_client.get("cmschat:{loginfail}:account:cho") == b"40"
        waits = await asyncio.gather(*(sends.take(user) for user in range(300)))
        assert waits == [0.0] * 300
        # One hash slot, so one master takes all 300 at once; each was counted there.
        assert await cluster_client.exists(*(f"cmschat:{{burst}}:{u}" for u in range(300))) == 300
    finally:
        await cluster_client.aclose()


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_a_failed_master_s_shards_come_back_on_its_replica_and_catch_up(
    fault: str,
    own_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    """Killed (its connections drop) or frozen (SIGSTOP: they stay open, silent)."""
    cluster = cluster_of(own_redis_cluster)
    rooms = set(range(1, SHARDS + 1))  # every shard: rooms on all three masters
    async with instances(cluster, own_redis_cluster.url, 2) as (one, two):
        ben = two.connect(user_id=2, rooms=rooms)
        wanted = {two.broker.shard_channel(room) for room in rooms}
        await two.until(lambda: wanted <= two.broker.subscribed_channels(), "subscribed")
        slot = own_redis_cluster.keyslot(two.broker.shard_channel(1))
        victim = own_redis_cluster.master_of(slot)
        victim_slots = own_redis_cluster.slots_of(victim)
        lost = {r for r in rooms if cluster.keyslot(two.broker.shard_channel(r)) in victim_slots}
        elsewhere = min(rooms - lost)
        take_all(ben)
        resubscribed_before = value("cmschat_broker_resubscriptions_total")
        (own_redis_cluster.kill if fault == "kill" else own_redis_cluster.freeze)(victim)
        failed = time.monotonic()
        try:
            # More than a batch waits for the failed master; another master's room is not
            # held up behind it.
            await one.broker.publish([message(1, seq) for seq in range(1, 601)])
            await one.broker.publish([message(elsewhere, 1)])
            await two.until(lambda: (elsewhere, 1) in heard(two), "other master")
            untouched_s = time.monotonic() - failed
            await asyncio.to_thread(own_redis_cluster.wait_promoted, slot, victim)
            promoted_s = time.monotonic() - failed
            assert untouched_s < promoted_s
            # Every lost channel subscribed again on the promoted replica.
            await two.until(
                lambda: (
                    value("cmschat_broker_resubscriptions_total")
                    >= resubscribed_before + len({two.broker.shard_channel(r) for r in lost})
                ),
                "resubscribed",
            )
            resubscribed_s = time.monotonic() - failed
            assert wanted <= two.broker.subscribed_channels()
            assert value("cmschat_broker_shard_channels") == 2 + len(wanted)  # 2 controls
            # The rooms of the lost shards, and only those, were read back: what pub/sub
            # dropped meanwhile comes from the database.
            assert {room for kind, room, _ in queued(ben) if kind == CATCH_UP} == lost
            await one.broker.publish([message(1, 601)])
            await two.until(lambda: (1, 601) in heard(two), "live again")
            delivered_s = time.monotonic() - failed
            assert len(heard(two)) == len(set(heard(two)))  # nothing heard twice
        finally:
            if fault == "freeze":
                own_redis_cluster.thaw(victim)
        print(
            f"master {fault}: another master's room delivered after {untouched_s:.2f} s, "
            f"replica promoted after {promoted_s:.2f} s, its {len(lost)} rooms' shards "
            f"resubscribed (and caught up) after {resubscribed_s:.2f} s, "
            f"live again after {delivered_s:.2f} s"
        )


async def test_the_control_channel_s_master_killed_catches_everything_up(
    own_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    cluster = cluster_of(own_redis_cluster)
    async with instances(cluster, own_redis_cluster.url, 2) as (one, two):
        ben = two.connect(user_id=2, rooms={3})
        await two.until(
            lambda: two.broker.shard_channel(3) in two.broker.subscribed_channels(), "subscribed"
        )
        take_all(ben)
        own_redis_cluster.kill(
            own_redis_cluster.master_of(own_redis_cluster.keyslot(CHANNEL + ":control"))
        )
        await two.until(lambda: two.reconnects == 1, "control back")
        assert two.broker.connected
        assert (CATCH_UP, 3, None) in queued(ben)
        ended = session_ended(2)
        await one.broker.publish([ended])
        await two.until(lambda: ben.ended, "ended")


async def test_a_command_s_broker_publishes_a_revocation_without_being_started(
    cluster_client: RedisCluster,
    shared_redis_cluster: OwnRedisCluster,  # noqa: F811
) -> None:
    """``cmschat user disable`` closes the user's sockets on every running instance."""
    command_settings = Settings(
        redis_cluster=True, redis_url=shared_redis_cluster.url, redis_prefix=CHANNEL.split(":")[0]
    )
    command_redis = redis_client(command_settings)
    command = redis_broker(command_settings, command_redis)
    async with instances(cluster_client, shared_redis_cluster.url, 1) as (running,):
        ben = running.connect(user_id=2, rooms=set())
        ended = session_ended(2)
        try:
            await command.publish([ended])
        finally:
            await command.close()
            await command_redis.aclose()
        await running.until(lambda: ben.ended, "ended")


def test_a_cluster_needs_a_node_to_start_from() -> None:
    with pytest.raises(ValidationError, match="CMSCHAT_REDIS_CLUSTER: set CMSCHAT_REDIS_URL"):
        Settings(environment="test", redis_cluster=True)  # type: ignore[arg-type]
    chosen = Settings(environment="test", redis_cluster=True, redis_url="redis://10.0.0.5:7000")  # type: ignore[arg-type]
    assert isinstance(redis_client(chosen), RedisCluster)
    assert not isinstance(redis_client(Settings(redis_url="redis://10.0.0.5:6379")), RedisCluster)
