"""One Redis Cluster master's subscribing connection, read by a task of its own.

Its reader tells the subscriber (``shard_subscriber.py``) what arrives: messages, Redis
confirming a subscription, Redis unsubscribing a channel on its own (its slot moved), a
subscription refused (``MOVED``: placed on a stale slot map), and the connection lost (an
error, or silence through a ping: a frozen or cut-off master looks like that).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from cmschat.realtime.silence import heard_or_pinged, stop


class NodeEvents(Protocol):
    """What a node's reader reports, as it happens."""

    def on_node_message(self, channel: str, data: bytes) -> None: ...

    def on_node_confirmed(self, node: NodeSubscription, channel: str) -> None: ...

    def on_node_moved(self, node: NodeSubscription, channel: str) -> None: ...

    def on_node_refused(self, node: NodeSubscription, error: ResponseError) -> None: ...

    def on_node_lost(self, node: NodeSubscription, error: Exception) -> None: ...


class NodeSubscription:
    """One master's connection, the channels placed on it, and its reader."""

    def __init__(self, name: str, client: Redis, events: NodeEvents) -> None:
        self.name = name
        self.channels: set[str] = set()
        """Channels subscribed or being subscribed here."""
        self._client = client
        self._pubsub: PubSub = client.pubsub()
        self._events = events
        self._unsubscribing: set[str] = set()
        """Channels we unsubscribed from here: Redis's reply is ours, not a slot moving."""
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def subscribe(self, channel: str) -> None:
        """Send ``SSUBSCRIBE`` (the reader reports the confirmation)."""
        self.channels.add(channel)
        self._unsubscribing.discard(channel)
        await self._pubsub.ssubscribe(channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="cmschat-shard-reader")

    async def unsubscribe(self, channel: str) -> None:
        """Send ``SUNSUBSCRIBE``; a failure is the reader's to notice."""
        self.channels.discard(channel)
        self.forget(channel)
        with contextlib.suppress(Exception):
            await self._pubsub.sunsubscribe(channel)

    def forget(self, channel: str) -> None:
        """Whatever Redis says of ``channel`` here from now on is not news (we left it)."""
        self.channels.discard(channel)
        self._unsubscribing.add(channel)

    async def _read(self) -> None:
        try:
            while not self._closed:
                try:
                    async for message in heard_or_pinged(self._pubsub, lambda: self._closed):
                        self._handle(message)
                except ResponseError as refused:
                    self._events.on_node_refused(self, refused)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closed:
                self._events.on_node_lost(self, exc)

    def _handle(self, message: dict[str, object]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        raw = message["channel"]
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind == "smessage":
            data = message["data"]
            self._events.on_node_message(channel, data if isinstance(data, bytes) else b"")
        elif kind == "ssubscribe" and channel in self.channels:
            self._events.on_node_confirmed(self, channel)
        elif kind == "sunsubscribe" and channel in self._unsubscribing:
            self._unsubscribing.discard(channel)  # the answer to ours
        elif kind == "sunsubscribe" and channel in self.channels:
            self._events.on_node_moved(self, channel)

    async def close(self) -> None:
        """Stop reading and close the connection (each step bounded)."""
        self._closed = True
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            await stop(reader)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._client.aclose()
