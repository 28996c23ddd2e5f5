"""Event fan-out on a Redis Cluster: each instance hears only the rooms its sockets follow.

On one Redis every instance hears every event (broker.py). On a cluster that would make
every master carry every room's traffic to every instance; instead rooms are spread over
``shards`` shard channels (``SPUBLISH``/``SSUBSCRIBE``, Redis 7), each served by the
master owning its hash slot, and an instance subscribes to a shard only while one of its
connections follows a room in it. What every instance must hear goes on one control
channel that all subscribe to: session events (a revoked token), events for chosen users
or for everyone (read markers, presence, notices), and the events the instances' caches
or routes depend on (members joining or leaving, a room or a member changed).

Nothing is lost when a subscription starts late or breaks: once Redis confirms a shard's
(re)subscription, the connections following its rooms catch up from the database, as after
an outage on one Redis; the control channel's coming back flushes the caches and catches
everything up (``on_reconnect``). Events of one room all travel on one channel, in order;
the senders' gap repair orders a room's events that arrive on both channels.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from redis.asyncio import RedisCluster

from cmschat.events import EVERYONE, MEMBER_CHANGED, SESSION_EVENTS, USER_CHANGED
from cmschat.realtime.broker import (
    URGENT_TIMEOUT_SECONDS,
    Deliver,
    Envelope,
    deliver_message,
)
from cmschat.realtime.connections import Hub
from cmschat.realtime.shard_publisher import Outgoing, ShardPublisher
from cmschat.realtime.shard_subscriber import Connect, ShardSubscriber
from cmschat.realtime.silence import stop

log = logging.getLogger(__name__)

CONTROL_TYPES = SESSION_EVENTS | {
    "member.joined",
    "member.left",
    "room.updated",
    MEMBER_CHANGED,
    USER_CHANGED,
}
"""Room events every instance hears: they change routes (who follows a room) or caches."""


def on_control(envelope: Envelope) -> bool:
    """Whether an event goes to every instance rather than its room's shard."""
    return (
        envelope.type in CONTROL_TYPES
        or envelope.room_id == EVERYONE
        or envelope.only_user_ids is not None
    )


class ShardedBroker:
    """Several instances on a Redis Cluster: room events on shard channels (module doc)."""

    def __init__(
        self,
        cluster: RedisCluster,
        connect: Connect,
        hub: Hub | None,
        *,
        channel: str,
        shards: int,
        backlog: int = 100_000,
    ) -> None:
        self._cluster = cluster
        self._hub = hub
        self._control = channel + ":control"
        self._shard_prefix = channel + ":shard:"
        self._shards = shards
        self._rooms: dict[int, set[int]] = {}
        """Per shard: the rooms this instance's connections follow in it."""
        self._subscriber = ShardSubscriber(
            cluster, connect, on_message=self._received, on_subscribed=self._subscribed
        )
        self._publisher = ShardPublisher(cluster, connect)
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=backlog)
        """(channel, encoded envelope) waiting for the next batch."""
        self._prefix = secrets.token_hex(6) + "\n"
        self._deliver: Deliver | None = None
        self._on_reconnect: Callable[[], None] | None = None
        self._started = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        """Whether the control channel (revocations, cache invalidations) is subscribed."""
        return self._subscriber.subscribed(self._control)

    def shard_channel(self, room_id: int) -> str:
        """The shard channel carrying ``room_id``'s events (its number as the hash tag)."""
        return f"{self._shard_prefix}{{{room_id % self._shards}}}"

    def subscribed_channels(self) -> set[str]:
        """The channels this instance hears now."""
        return self._subscriber.channels()

    async def start(self, deliver: Deliver, on_reconnect: Callable[[], None]) -> None:
        """Subscribe to the control channel (and, from now on, to the shards of followed
        rooms), and start the publisher."""
        self._deliver, self._on_reconnect = deliver, on_reconnect
        if self._hub is not None:
            self._hub.room_interest = self._room_interest
        await self._cluster.initialize()  # the slot map, before the first subscription
        self._subscriber.want(self._control)
        self._subscriber.start()
        self._sender = asyncio.create_task(self._send(), name="cmschat-broker-out")
        await asyncio.wait_for(self._started.wait(), timeout=10)

    def _room_interest(self, room_id: int, followed: bool) -> None:
        shard = room_id % self._shards
        rooms = self._rooms.get(shard)
        if followed:
            if rooms is None:
                rooms = self._rooms[shard] = set()
                self._subscriber.want(self.shard_channel(room_id))
            rooms.add(room_id)
        elif rooms is not None:
            rooms.discard(room_id)
            if not rooms:
                del self._rooms[shard]
                self._subscriber.unwant(self.shard_channel(room_id))

    def _subscribed(self, channel: str) -> None:
        if channel == self._control:
            if not self._started.is_set():
                self._started.set()
            elif self._on_reconnect is not None:
                log.warning("event broker's control channel is back; connections catch up")
                self._on_reconnect()
            return
        # Whatever the shard carried before now may have been missed: read it instead.
        shard = int(channel.rpartition("{")[2].rstrip("}"))
        if self._hub is not None:
            self._hub.catch_up(self._rooms.get(shard, ()))

    def _received(self, channel: str, data: bytes) -> None:
        text = data.decode()
        if text.startswith(self._prefix) or self._deliver is None:
            return  # ours: delivered here when it was published
        try:
            deliver_message(text.partition("\n")[2], True, self._deliver)
        except (ValueError, KeyError, TypeError, IndexError):
            log.exception("dropped an unreadable broker message on %s", channel)

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Deliver to this instance's connections, queue for the others; session events
        go to Redis before this returns (nothing published after them can overtake them)."""
        if self._deliver is not None:
            for envelope in envelopes:
                self._deliver(envelope)
        urgent = [e for e in envelopes if e.type in SESSION_EVENTS]
        if urgent:
            body = self._prefix + "\n".join(e.encode() for e in urgent)
            try:
                async with asyncio.timeout(URGENT_TIMEOUT_SECONDS):
                    await self._cluster.initialize()  # a command's broker is never started
                    groups, unserved = self._publisher.groups([self._control])
                    for node, _ in groups:
                        unserved |= await self._publisher.publish_on(node, {self._control: body})
            except Exception:
                unserved = {self._control}
            if unserved:
                # Each instance's periodic session check closes the sockets instead.
                log.warning("could not publish %d session events", len(urgent))
        for envelope in envelopes:
            if envelope.type in SESSION_EVENTS:
                continue
            channel = (
                self._control if on_control(envelope) else self.shard_channel(envelope.room_id)
            )
            try:
                self._outbox.put_nowait((channel, envelope.encode()))
            except asyncio.QueueFull:
                log.warning("event broker backlog full; an event goes by the database only")

    async def _send(self) -> None:
        """One ``SPUBLISH`` per channel for what has queued up, one task per master
        (shard_publisher.py): a master that is slow or gone holds up its own channels only;
        theirs are sent again, in order, after a back-off (``Outgoing``)."""
        sending = Outgoing()
        while not self._closing:
            await sending.next_turn(self._outbox)
            for channel, text in sending.taken:
                sending.pending.setdefault(channel, []).append(text)
            groups, unserved = self._publisher.groups(sending.due())
            sending.failed(unserved)
            for node, channels in groups:
                batch = {c: list(sending.pending[c]) for c in channels}
                bodies = {c: self._prefix + "\n".join(texts) for c, texts in batch.items()}
                task = asyncio.create_task(self._publisher.publish_on(node, bodies))
                sending.started(task, batch)

    async def close(self) -> None:
        """Stop listening and publishing."""
        self._closing = True
        if self._sender is not None:
            await stop(self._sender)
            self._sender = None
        await self._subscriber.close()
        await self._publisher.close()
