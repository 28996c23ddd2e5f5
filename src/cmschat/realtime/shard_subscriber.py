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
from redis.asyncio.client import PubSub
from redis.exceptions import RedisClusterException

from cmschat.observability import instruments as m

log = logging.getLogger(__name__)

PING_SECONDS = 1.0
"""A node silent this long is pinged; silent as long again, it is given up."""
RETRY_MAX_SECONDS = 1.0
"""Failed subscriptions are tried again at least this often."""
LINGER_SECONDS = 10.0
"""A channel no longer wanted stays subscribed this long."""

Connect = Callable[[str, int], Redis]
"""A client for one node, by host and port, that never retries on its own: a command that
fails must raise, not reconnect and resubscribe quietly (``redis_clients.node_clients``)."""


class _Node:
    """One master's subscribing connection and the channels placed on it."""

    def __init__(self, name: str, client: Redis) -> None:
        self.name = name
        self.client = client
        self.pubsub: PubSub = client.pubsub()
        self.channels: set[str] = set()
        self.reader: asyncio.Task[None] | None = None


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
        self._nodes: dict[str, _Node] = {}
        self._placed: dict[str, _Node] = {}
        self._confirmed: set[str] = set()
        self._lost: set[str] = set()
        """Channels whose subscription broke and is not yet renewed."""
        self._changed = asyncio.Event()
        self._reload = False
        self._task: asyncio.Task[None] | None = None
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
        tasks = [self._task] if self._task is not None else []
        tasks += [node.reader for node in self._nodes.values() if node.reader is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for node in list(self._nodes.values()):
            await self._close_node(node)
        self._nodes.clear()
        m.BROKER_SHARD_CHANNELS.dec(len(self._confirmed))
        self._confirmed.clear()
        self._placed.clear()
        self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                if self._reload:
                    self._reload = False
                    await self._cluster.nodes_manager.initialize()
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
        for channel, since in list(self._unwanted_at.items()):
            if now - since >= LINGER_SECONDS:
                del self._unwanted_at[channel]
                await self._drop(channel)
        for channel in sorted(self._wanted - self._placed.keys()):
            node = self._node_serving(channel)
            node.channels.add(channel)
            self._placed[channel] = node
            try:
                await node.pubsub.ssubscribe(channel)
            except Exception:
                self._lose(node)
                raise
            if node.reader is None:
                node.reader = asyncio.create_task(self._read(node), name="cmschat-shard-reader")

    def _node_serving(self, channel: str) -> _Node:
        serving = self._cluster.get_node_from_key(channel)
        if serving is None:
            raise RedisClusterException(f"no master serves {channel} now")
        node = self._nodes.get(serving.name)
        if node is None:
            node = self._nodes[serving.name] = _Node(
                serving.name, self._connect(serving.host, int(serving.port))
            )
        return node

    async def _drop(self, channel: str) -> None:
        self._lost.discard(channel)
        node = self._unplace(channel, lost=False)
        if node is None:
            return
        if not node.channels:
            self._nodes.pop(node.name, None)
            await self._close_node(node)
            return
        with contextlib.suppress(Exception):  # a failing node is noticed by its reader
            await node.pubsub.sunsubscribe(channel)

    async def _read(self, node: _Node) -> None:
        pinged = False
        try:
            while True:
                message = await node.pubsub.get_message(timeout=PING_SECONDS)
                if message is None:
                    if pinged:
                        raise TimeoutError(f"no answer to a ping in {2 * PING_SECONDS} s")
                    await node.pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                kind = message["type"]
                if kind == "pong":
                    continue
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if kind == "smessage":
                    self._on_message(channel, message["data"])
                elif kind == "ssubscribe":
                    self._confirm(node, channel)
                elif kind == "sunsubscribe" and self._placed.get(channel) is node:
                    # Not asked for: the slot moved to another master.
                    log.warning(
                        "Redis moved shard channel %s; subscribing where it is now", channel
                    )
                    self._unplace(channel)
                    self._reload = True
                    self._changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "lost Redis Cluster node %s (%s: %s); resubscribing its %d channels",
                node.name,
                type(exc).__name__,
                exc,
                len(node.channels),
            )
            self._lose(node)

    def _confirm(self, node: _Node, channel: str) -> None:
        if self._placed.get(channel) is not node or channel in self._confirmed:
            return
        self._confirmed.add(channel)
        m.BROKER_SHARD_CHANNELS.inc()
        if channel in self._lost:
            self._lost.discard(channel)
            m.BROKER_RESUBSCRIBED.inc()
        self._on_subscribed(channel)

    def _unplace(self, channel: str, *, lost: bool = True) -> _Node | None:
        node = self._placed.pop(channel, None)
        if channel in self._confirmed:
            self._confirmed.discard(channel)
            m.BROKER_SHARD_CHANNELS.dec()
        if lost and channel in self._wanted:
            self._lost.add(channel)
        if node is not None:
            node.channels.discard(channel)
        return node

    def _lose(self, node: _Node) -> None:
        """Forget a failed node: its channels are placed again, after a slot map reload."""
        for channel in list(node.channels):
            self._unplace(channel)
        if self._nodes.get(node.name) is node:
            del self._nodes[node.name]
        closing = asyncio.create_task(self._close_node(node))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        self._reload = True
        self._changed.set()

    async def _close_node(self, node: _Node) -> None:
        if node.reader is not None and node.reader is not asyncio.current_task():
            node.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await node.reader
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await node.pubsub.aclose()  # type: ignore[no-untyped-call]
                await node.client.aclose()
