"""Publishing on Redis Cluster shard channels, each master on its own.

redis-py's cluster pipeline fails a whole batch when one master is down, tries it again
three times, and closes the client's connections to every node meanwhile. Here each
master's channels go in a pipeline of their own, on a connection of their own: a master
that fails (gone, failing over, no longer serving a slot) fails only its channels, which
the broker sends again later; the other masters' channels leave at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode

from cmschat.realtime.broker import BATCH_MAX, RECONNECT_MAX_DELAY_SECONDS
from cmschat.realtime.shard_subscriber import Connect
from cmschat.realtime.silence import stop

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 2.0
"""A master that takes longer than this to answer a batch counts as failing."""
PENDING_MAX = 10_000
"""Events kept per channel while its master cannot be reached."""


class ShardPublisher:
    """``SPUBLISH`` per master, reporting the channels that did not get through."""

    def __init__(self, cluster: RedisCluster, connect: Connect) -> None:
        self._cluster = cluster
        self._connect = connect
        self._clients: dict[str, Redis] = {}
        self._reloading: asyncio.Task[None] | None = None

    def groups(self, channels: list[str]) -> tuple[list[tuple[ClusterNode, list[str]]], set[str]]:
        """The channels by the master serving each, and those no master serves now."""
        groups: dict[str, tuple[ClusterNode, list[str]]] = {}
        unserved: set[str] = set()
        for channel in channels:
            try:
                node = self._cluster.get_node_from_key(channel)
            except Exception:
                node = None  # a slot no master serves right now
            if node is None:
                unserved.add(channel)
            else:
                groups.setdefault(node.name, (node, []))[1].append(channel)
        if unserved:
            self.reload()
        return list(groups.values()), unserved

    def reload(self) -> None:
        """Ask the cluster where the slots live now, in the background: a frozen node
        that the reload asks first must not hold up the masters that answer."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        try:
            await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            log.warning("could not reload the Redis Cluster's slots (%s)", type(exc).__name__)

    async def publish_on(self, node: ClusterNode, bodies: dict[str, str]) -> set[str]:
        """Publish each channel's body on ``node``; the channels that failed."""
        failed = await self._on(node, list(bodies), bodies)
        if failed:
            self.reload()  # the next attempt goes where they live now
        return failed

    async def _on(self, node: ClusterNode, channels: list[str], bodies: dict[str, str]) -> set[str]:
        client = self._clients.get(node.name)
        if client is None:
            client = self._clients[node.name] = self._connect(node.host, int(node.port))
        try:
            async with (
                asyncio.timeout(PUBLISH_TIMEOUT_SECONDS),
                client.pipeline(transaction=False) as pipe,
            ):
                for channel in channels:
                    pipe.spublish(channel, bodies[channel])
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            log.warning(
                "could not publish to Redis Cluster node %s (%s)", node.name, type(exc).__name__
            )
            del self._clients[node.name]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await client.aclose()
            return set(channels)
        # An error reply (MOVED: the slot is served elsewhere now) fails its channel alone.
        return {
            channel
            for channel, result in zip(channels, results, strict=True)
            if isinstance(result, Exception)
        }

    async def close(self) -> None:
        """Close every master's connection."""
        if self._reloading is not None:
            await stop(self._reloading)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await client.aclose()


class Outgoing:
    """The broker's sender's state: events per channel not yet taken by Redis, publishes
    in flight, channels in back-off after a failure. A channel that stays unreachable keeps
    at most ``PENDING_MAX`` events: older ones are dropped (whoever lost that master
    catches its rooms up from the database)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[str]] = {}
        self.busy: set[str] = set()
        self.retry_at: dict[str, float] = {}
        self.delay = 0.1
        self.tasks: set[asyncio.Task[set[str]]] = set()
        self.taken: list[tuple[str, str]] = []
        self._settled = asyncio.Event()

    def due(self) -> list[str]:
        """Channels with events to send, none in flight, not in back-off."""
        now = time.monotonic()
        return [c for c in self.pending if c not in self.busy and self.retry_at.get(c, 0.0) <= now]

    async def next_turn(self, outbox: asyncio.Queue[tuple[str, str]]) -> None:
        """Wait for new events, a publish settling, or a back-off ending; then take up to a
        batch's worth of what has queued."""
        self.taken = []
        if not self.due():
            waits = [at for channel, at in self.retry_at.items() if channel not in self.busy]
            timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
            getting = asyncio.ensure_future(outbox.get())
            settled = asyncio.ensure_future(self._settled.wait())
            try:
                await asyncio.wait(
                    {getting, settled}, timeout=timeout, return_when="FIRST_COMPLETED"
                )
            finally:
                settled.cancel()
                if not getting.done():
                    getting.cancel()
            self._settled.clear()
            if getting.done() and not getting.cancelled():
                self.taken.append(getting.result())
        while len(self.taken) < BATCH_MAX and not outbox.empty():
            self.taken.append(outbox.get_nowait())

    def failed(self, channels: set[str]) -> None:
        """These channels could not be sent: back off before the next try."""
        if not channels:
            return
        retry_at = time.monotonic() + self.delay
        for channel in channels:
            self.retry_at[channel] = retry_at
            texts = self.pending.get(channel, [])
            if len(texts) > PENDING_MAX:
                dropped = len(texts) - PENDING_MAX
                del texts[:dropped]
                log.warning("dropped %d events of %s: database only", dropped, channel)
        log.warning(
            "could not publish to %d Redis Cluster channels; retrying in %.1fs",
            len(channels),
            self.delay,
        )
        self.delay = min(self.delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    def started(self, task: asyncio.Task[set[str]], batch: dict[str, list[str]]) -> None:
        """A publish of ``batch`` is under way in ``task``."""
        self.busy |= batch.keys()
        self.tasks.add(task)
        task.add_done_callback(lambda done: self.settle(done, batch))

    def settle(self, task: asyncio.Task[set[str]], batch: dict[str, list[str]]) -> None:
        """A publish ended: what got through leaves ``pending``; the rest waits its turn."""
        self.tasks.discard(task)
        self.busy -= batch.keys()
        failed = set(batch) if task.cancelled() or task.exception() else task.result()
        for channel, texts in batch.items():
            if channel in failed:
                continue
            self.retry_at.pop(channel, None)
            remaining = self.pending.get(channel, [])
            del remaining[: len(texts)]  # sent in order; later ones stay queued
            if not remaining:
                self.pending.pop(channel, None)
        if failed:
            self.failed(failed)
        elif not self.retry_at:
            self.delay = 0.1
        self._settled.set()
