"""Subscriptions to Redis Cluster shard channels that come back after a failover, and say so.

redis-py's ``ClusterPubSub`` reads its nodes one after another with a time-out each (a
message on one node waits while another is read) and resubscribes silently after a
reconnect, so its caller never learns that messages may have been missed meanwhile. Here
each master serving a wanted channel has a connection of its own, read by a task of its
own, and every (re)subscription, once Redis confirms it, is reported (``on_subscribed``):
what was published on that channel before may be gone, and the caller reads it from where
it is kept (the broker has the channel's rooms caught up from the database).

A node whose connection fails, or that stays silent through a ping, loses its channels:
the slot map is reloaded and they are subscribed on whichever masters serve them now (a
promoted replica), tried again until one takes them. A ``sunsubscribe`` Redis sends on its
own (the channel's slot moved elsewhere) does the same for that channel. A channel no
longer wanted is kept a while first: a user reconnecting does not cost a resubscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

from cmschat.observability import instruments as m
from cmschat.realtime.shard_node import NodeSubscription
from cmschat.realtime.silence import stop

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 1.0
"""Failed subscriptions are tried again at least this often."""
LINGER_SECONDS = 10.0
"""A channel no longer wanted stays subscribed this long."""

Connect = Callable[[str, int], Redis]
"""A client for one node, by host and port, that never retries on its own: a command that
fails must raise, not reconnect and resubscribe quietly (``redis_clients.node_clients``)."""


class ShardSubscriber:
    """Keeps this process subscribed to the shard channels it wants, wherever they live."""

    def __init__(
        self,
        cluster: RedisCluster,
        connect: Connect,
        *,
        on_message: Callable[[str, bytes], None],
        on_subscribed: Callable[[str], None],
    ) -> None:
        self._cluster = cluster
        self._connect = connect
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._wanted: set[str] = set()
        self._unwanted_at: dict[str, float] = {}
        self._nodes: dict[str, NodeSubscription] = {}
        self._placed: dict[str, NodeSubscription] = {}
        self._confirmed: set[str] = set()
        self._lost: set[str] = set()
        """Channels whose subscription broke and is not yet renewed."""
        self._changed = asyncio.Event()
        self._reload = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closing: set[asyncio.Task[None]] = set()

    def want(self, channel: str) -> None:
        """Be subscribed to ``channel`` (soon; ``on_subscribed`` says when)."""
        self._wanted.add(channel)
        self._unwanted_at.pop(channel, None)
        if channel not in self._placed:
            self._changed.set()

    def unwant(self, channel: str) -> None:
        """``channel`` is no longer needed: dropped after ``LINGER_SECONDS`` unless wanted again."""
        self._wanted.discard(channel)
        self._unwanted_at[channel] = time.monotonic()
        self._changed.set()  # to wait no longer than the linger from now

    def subscribed(self, channel: str) -> bool:
        """Whether Redis has confirmed the subscription and it holds now."""
        return channel in self._confirmed

    def channels(self) -> set[str]:
        """The channels subscribed now."""
        return set(self._confirmed)

    def start(self) -> None:
        """Keep the subscriptions from now on."""
        self._task = asyncio.create_task(self._run(), name="cmschat-shard-subscriber")

    async def close(self) -> None:
        """Unsubscribe from everything and close the connections."""
        self._stopping = True
        if self._task is not None:
            await stop(self._task)
        for node in list(self._nodes.values()):
            self._retire(node)
        await asyncio.gather(*self._closing)
        m.BROKER_SHARD_CHANNELS.dec(len(self._confirmed))
        self._confirmed.clear()
        self._placed.clear()
        self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                if self._reload:
                    self._reload = False
                    await self._cluster.nodes_manager.initialize()
                    self._unplace_misplaced()
                await self._reconcile()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A master gone and not yet replaced, or a slot map from before a failover.
                log.warning(
                    "could not subscribe to Redis Cluster shard channels (%s); retrying in %.1fs",
                    type(exc).__name__,
                    delay,
                )
                self._reload = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_drop()):
                    await self._changed.wait()
            self._changed.clear()

    def _next_drop(self) -> float | None:
        """Seconds until the first lingering channel is due to be dropped (None: none)."""
        if not self._unwanted_at:
            return None
        return max(0.0, min(self._unwanted_at.values()) + LINGER_SECONDS - time.monotonic())

    async def _reconcile(self) -> None:
        now = time.monotonic()
        for channel in list(self._unwanted_at):
            since = self._unwanted_at.get(channel)  # wanted again during an earlier drop?
            if since is not None and now - since >= LINGER_SECONDS:
                del self._unwanted_at[channel]
                await self._drop(channel)
        failed: list[Exception] = []
        failed_nodes: set[str] = set()
        for channel in sorted(self._wanted - self._placed.keys()):
            if channel in self._placed or channel not in self._wanted:
                continue  # changed during an earlier subscription
            try:
                node = self._node_serving(channel, failed_nodes)
            except RedisClusterException as exc:
                failed.append(exc)
                continue
            self._placed[channel] = node
            try:
                await node.subscribe(channel)
            except Exception as exc:
                # This master alone: the others' channels are subscribed all the same.
                failed.append(exc)
                failed_nodes.add(node.name)
                self.on_node_lost(node, exc)
        if failed:
            raise failed[0]

    def _node_serving(self, channel: str, failed_nodes: set[str]) -> NodeSubscription:
        serving = self._cluster.get_node_from_key(channel)
        if serving is None or serving.name in failed_nodes:
            raise RedisClusterException(f"no master serves {channel} now")
        node = self._nodes.get(serving.name)
        if node is None:
            node = self._nodes[serving.name] = NodeSubscription(
                serving.name, self._connect(serving.host, int(serving.port)), self
            )
        return node

    def _unplace_misplaced(self) -> None:
        """After a reload of the slot map: channels placed on a master that no longer
        serves them (a failover, a resharding) are placed again where they live now."""
        for channel, node in list(self._placed.items()):
            try:
                serving = self._cluster.get_node_from_key(channel)
            except Exception:
                serving = None
            if serving is None or serving.name != node.name:
                self._unplace(channel)
                node.forget(channel)
                if not node.channels:
                    self._retire(node)

    async def _drop(self, channel: str) -> None:
        self._lost.discard(channel)
        node = self._unplace(channel, lost=False)
        if node is None:
            return
        if not node.channels:
            self._retire(node)
            return
        await node.unsubscribe(channel)

    def on_node_message(self, channel: str, data: bytes) -> None:
        """A message on a subscribed channel."""
        self._on_message(channel, data)

    def on_node_refused(self, node: NodeSubscription, error: ResponseError) -> None:
        """A subscription refused (MOVED, from a stale slot map): the node itself is fine;
        the slot map is reloaded and misplaced channels placed again."""
        log.warning("Redis Cluster node %s refused: %s", node.name, error)
        self._reload = True
        self._changed.set()

    def on_node_moved(self, node: NodeSubscription, channel: str) -> None:
        """Redis unsubscribed us on its own: the channel's slot moved to another master."""
        if self._placed.get(channel) is not node:
            return
        log.warning("Redis moved shard channel %s; subscribing where it is now", channel)
        self._unplace(channel)
        self._reload = True
        self._changed.set()
        if not node.channels:
            self._retire(node)

    def on_node_lost(self, node: NodeSubscription, error: Exception) -> None:
        """A failed node: its channels are placed again, after a slot map reload."""
        log.warning(
            "lost Redis Cluster node %s (%s: %s); resubscribing its %d channels",
            node.name,
            type(error).__name__,
            error,
            len(node.channels),
        )
        for channel in list(node.channels):
            self._unplace(channel)
        self._retire(node)
        self._reload = True
        self._changed.set()

    def on_node_confirmed(self, node: NodeSubscription, channel: str) -> None:
        """Redis confirmed a subscription: reported, as new or renewed."""
        if self._placed.get(channel) is not node or channel in self._confirmed:
            return
        self._confirmed.add(channel)
        m.BROKER_SHARD_CHANNELS.inc()
        if channel in self._lost:
            self._lost.discard(channel)
            m.BROKER_RESUBSCRIBED.inc()
        self._on_subscribed(channel)

    def _unplace(self, channel: str, *, lost: bool = True) -> NodeSubscription | None:
        node = self._placed.pop(channel, None)
        if channel in self._confirmed:
            self._confirmed.discard(channel)
            m.BROKER_SHARD_CHANNELS.dec()
        if lost and channel in self._wanted:
            self._lost.add(channel)
        if node is not None:
            node.channels.discard(channel)
        return node

    def _retire(self, node: NodeSubscription) -> None:
        """Forget a node and close its connection (in a task ``close`` waits for)."""
        if self._nodes.get(node.name) is node:
            del self._nodes[node.name]
        closing = asyncio.create_task(node.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
