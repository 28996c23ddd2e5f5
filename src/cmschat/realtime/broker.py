"""Event fan-out between app instances: in-process for one instance, Redis pub/sub for several.

The broker is the fast path, never the record: the database holds every room event, and a
connection that sees a gap in a room's ``seq`` fetches the missing events from there. So a
message Redis drops (it delivers at most once) is late, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from cmschat.events import SESSION_EVENTS
from cmschat.realtime import wire

log = logging.getLogger(__name__)

CHANNEL = "cmschat:events"
URGENT_TIMEOUT_SECONDS = 2.0
"""How long a revocation's publish may hold up its request before the backstop takes over."""
RECONNECT_MAX_DELAY_SECONDS = 1.0
"""Redis is tried again at least this often: a restart is noticed within a second."""


@dataclass(frozen=True)
class Envelope:
    """One event, serialised once, with what the hub needs to route it."""

    room_id: int
    seq: int | None
    type: str
    frame: str
    """The JSON text frame clients receive, byte for byte."""
    user_id: int | None = None
    only_user_ids: tuple[int, ...] | None = None

    wire = wire.FrameBytes()
    """The frame's bytes on the wire, built for the first socket and reused by the rest."""

    def encode(self) -> str:
        """The wire form between instances: a routing header line, then the frame."""
        header = {
            "r": self.room_id,
            "s": self.seq,
            "t": self.type,
            "u": self.user_id,
            "o": list(self.only_user_ids) if self.only_user_ids is not None else None,
        }
        return json.dumps(header, separators=(",", ":")) + "\n" + self.frame

    @classmethod
    def decode(cls, data: str) -> Envelope:
        """Read the wire form back."""
        header_text, _, frame = data.partition("\n")
        header = json.loads(header_text)
        only = header.get("o")
        return cls(
            room_id=int(header["r"]),
            seq=header.get("s"),
            type=str(header["t"]),
            frame=frame,
            user_id=header.get("u"),
            only_user_ids=tuple(only) if only is not None else None,
        )


Deliver = Callable[[Envelope], None]


class Broker(Protocol):
    """Carries committed events to every instance's hub."""

    connected: bool
    """Whether events from other instances reach this one right now."""

    async def start(self, deliver: Deliver, on_reconnect: Callable[[], None]) -> None:
        """Begin delivering published envelopes to ``deliver``."""
        ...

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Send envelopes to every instance (this one included)."""
        ...

    async def close(self) -> None:
        """Stop delivering."""
        ...


class MemoryBroker:
    """One process: publishing is delivering."""

    connected = True

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_reconnect: Callable[[], None]) -> None:
        """Deliver from now on."""
        self._deliver = deliver

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Hand envelopes straight to the hub."""
        if self._deliver is not None:
            for envelope in envelopes:
                self._deliver(envelope)

    async def close(self) -> None:
        """Stop delivering."""
        self._deliver = None


class RedisBroker:
    """Several instances: Redis pub/sub on one channel; each instance hears everything.

    Publishing delivers to this instance's own connections at once, then queues for the
    others: one task sends what has queued up in a pipeline, so a burst (a thousand clients
    connecting and announcing presence) uses one Redis connection instead of one each.
    Delivering locally first keeps users of one instance chatting while Redis is away;
    each envelope goes out behind its instance's id so the echo from Redis is skipped.
    """

    def __init__(self, redis: Redis, *, channel: str = CHANNEL, backlog: int = 100_000) -> None:
        self._redis = redis
        self._channel = channel
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=backlog)
        self._deliver: Deliver | None = None
        self._prefix = secrets.token_hex(6) + "\n"
        self.connected = False
        """Subscribed right now: what readiness reports for the broker."""

    async def start(self, deliver: Deliver, on_reconnect: Callable[[], None]) -> None:
        """Subscribe (and keep re-subscribing), and start the publisher."""
        self._deliver = deliver
        self._tasks = [
            asyncio.create_task(self._listen(deliver, on_reconnect), name="cmschat-broker-in"),
            asyncio.create_task(self._send(), name="cmschat-broker-out"),
        ]
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def _listen(self, deliver: Deliver, on_reconnect: Callable[[], None]) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    self.connected = True
                    if not first:
                        log.warning("event broker reconnected; connections catch up from the db")
                        on_reconnect()
                    first, delay = False, 0.1
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        text = data.decode() if isinstance(data, bytes) else data
                        if text.startswith(self._prefix):
                            continue  # ours: delivered here when it was published
                        try:
                            deliver(Envelope.decode(text.partition("\n")[2]))
                        except (ValueError, KeyError, TypeError):
                            log.exception("dropped an unreadable broker message")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                log.warning(
                    "event broker lost Redis (%s); retrying in %.1fs", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _send(self) -> None:
        delay = 0.1
        batch: list[str] = []
        while True:
            if not batch:
                batch.append(await self._outbox.get())
            while not self._outbox.empty() and len(batch) < 500:
                batch.append(self._outbox.get_nowait())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for wire in batch:
                        pipe.publish(self._channel, wire)
                    await pipe.execute()
                batch, delay = [], 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the batch and try again until Redis takes it: an instance whose
                # subscription never dropped (Redis stalled, not restarted) would otherwise
                # not hear of these events until the room's next message showed the gap.
                log.warning(
                    "could not publish %d events to Redis (%s); retrying in %.1fs",
                    len(batch),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Deliver to this instance's connections, queue for the others; session events
        go to Redis at once.

        A revocation is sent before this returns, so nothing the caller publishes (or has
        an instance publish) after it can overtake it on the channel.
        """
        if self._deliver is not None:
            for envelope in envelopes:
                self._deliver(envelope)
        urgent = [e for e in envelopes if e.type in SESSION_EVENTS]
        if urgent:
            try:
                async with (
                    asyncio.timeout(URGENT_TIMEOUT_SECONDS),
                    self._redis.pipeline(transaction=False) as pipe,
                ):
                    for envelope in urgent:
                        pipe.publish(self._channel, self._prefix + envelope.encode())
                    await pipe.execute()
            except Exception:
                # Each instance's periodic session check closes the sockets instead.
                log.warning("could not publish %d session events", len(urgent), exc_info=True)
        for envelope in envelopes:
            if envelope.type in SESSION_EVENTS:
                continue
            try:
                self._outbox.put_nowait(self._prefix + envelope.encode())
            except asyncio.QueueFull:
                log.warning("event broker backlog full; an event goes by the database only")

    async def close(self) -> None:
        """Stop listening and publishing."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
