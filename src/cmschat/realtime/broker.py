"""Event fan-out between app instances: in-process for one instance, Redis pub/sub for several.

The broker is the fast path, never the record: the database holds every room event, and a
connection that sees a gap in a room's ``seq`` fetches the missing events from there. So a
message Redis drops (it delivers at most once) is late, not lost.

Between instances events go in batches: every event queued since the last ``PUBLISH`` (a
group commit's worth, typically) travels as one message on ``<channel>:batches``, so each
instance parses one Redis message per batch instead of one per event (docs/performance.md:
~7 µs of CPU per event instead of 39 to 64). Session events (a revoked token) still go one per
message on ``<channel>``, the channel of releases before the batches, which every instance
also hears: an instance of the previous release, during a blue/green switch, still closes
a revoked session's sockets, and its own events still reach the new release's clients.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
from redis.asyncio import Redis

from cmschat.events import SESSION_EVENTS
from cmschat.realtime import wire
from cmschat.realtime.silence import heard_or_pinged, stop

log = logging.getLogger(__name__)

CHANNEL = "cmschat:events"
BATCHES = ":batches"
"""Suffix of the channel that carries batches of events (the module's docstring)."""
BATCH_MAX = 500
"""Events a batch message holds at most."""
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
        frame = self.frame
        if "\n" in frame:  # never from cmschat's compact JSON; a batch is split at newlines
            frame = orjson.dumps(orjson.loads(frame)).decode()
        return orjson.dumps(header).decode() + "\n" + frame

    @classmethod
    def decode(cls, data: str) -> Envelope:
        """Read the wire form back."""
        header_text, _, frame = data.partition("\n")
        return cls.from_lines(header_text, frame)

    @classmethod
    def from_lines(cls, header_text: str, frame: str) -> Envelope:
        """An envelope from its two lines of the wire form."""
        header = orjson.loads(header_text)
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

    @property
    def connected(self) -> bool:
        """Whether events from other instances reach this one right now."""
        ...

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
    """Several instances: Redis pub/sub; each instance hears everything.

    Publishing delivers to this instance's own connections at once, then queues for the
    others: one task sends what has queued up as one batch message, so a burst (a group
    commit's events, a thousand clients announcing presence) is one ``PUBLISH``. Delivering
    locally first keeps users of one instance chatting while Redis is away; each message
    goes out behind its instance's id so the echo from Redis is skipped.
    """

    def __init__(
        self, redis: Redis, *, channel: str = CHANNEL, backlog: int = 100_000, subscriber: Redis
    ) -> None:
        """``subscriber``: the subscription's client, one that never retries (redis-py's
        retries resubscribe silently: what was published meanwhile is never caught up)."""
        self._redis = redis
        self._subscriber = subscriber
        self._channel = channel
        self._batches = channel + BATCHES
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=backlog)
        """Encoded envelopes (``Envelope.encode``) waiting for the next batch."""
        self._deliver: Deliver | None = None
        self._prefix = secrets.token_hex(6) + "\n"
        self.connected = False
        """Subscribed right now: what readiness reports for the broker."""
        self._closing = False

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
        batches = self._batches.encode()
        while not self._closing:
            try:
                async with self._subscriber.pubsub() as pubsub:  # (heard_or_pinged's needs)
                    await pubsub.subscribe(self._channel, self._batches)
                    async for message in heard_or_pinged(pubsub, lambda: self._closing):
                        if message.get("type") == "subscribe" and message.get("data") == 2:
                            # Both channels confirmed: nothing published from now on is
                            # missed, so a catch-up from here misses nothing either.
                            self._subscribed.set()
                            self.connected = True
                            if not first:
                                log.warning("event broker reconnected; sockets catch up")
                                on_reconnect()
                            first, delay = False, 0.1
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        text = data.decode() if isinstance(data, bytes) else data
                        if text.startswith(self._prefix):
                            continue  # ours: delivered here when it was published
                        channel = message["channel"]
                        batch = channel in (batches, self._batches)
                        try:
                            deliver_message(text.partition("\n")[2], batch, deliver)
                        except (ValueError, KeyError, TypeError, IndexError):
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
        while not self._closing:
            if not batch:
                batch.append(await self._outbox.get())
            while not self._outbox.empty() and len(batch) < BATCH_MAX:
                batch.append(self._outbox.get_nowait())
            try:
                await self._redis.publish(self._batches, self._prefix + "\n".join(batch))
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
                self._outbox.put_nowait(envelope.encode())
            except asyncio.QueueFull:
                log.warning("event broker backlog full; an event goes by the database only")

    async def close(self) -> None:
        """Stop listening and publishing (and close the subscriber's own client)."""
        self._closing = True
        for task in self._tasks:
            await stop(task)
        self._tasks = []
        if self._subscriber is not self._redis:  # a client of its own
            await self._subscriber.aclose()


def deliver_message(body: str, batch: bool, deliver: Deliver) -> None:
    """Hand what one Redis message carries to ``deliver``: a batch's envelopes in order
    (two lines each), or the one envelope of a single message."""
    if not batch:
        deliver(Envelope.decode(body))
        return
    lines = body.split("\n")
    if len(lines) % 2:
        raise ValueError(f"a batch of {len(lines)} lines, not header and frame pairs")
    for at in range(0, len(lines), 2):
        deliver(Envelope.from_lines(lines[at], lines[at + 1]))
