"""A room's events that arrive out of order, put back in order from the queue before the
stored events are asked.

With several instances a room's events reach an instance in two streams: its own at once,
the others' through the broker a few milliseconds later. So an event of this instance often
comes before another instance's one under it. Read from the database at once, the missing
one is read there and dropped again when it arrives: with two workers sharing rooms that
was a replay (six queries) for most sends (docs/performance.md, "Events between workers in
batches"). The sender first waits, briefly, for it to be queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import CATCH_UP, Connection


class GapWait:
    """How long one connection's sender waits for a gap to be queued, and its wake-up."""

    __slots__ = ("seconds", "waiter")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.waiter: asyncio.Future[None] | None = None
        """Set while the sender waits: ``more_queued`` wakes it."""

    def more_queued(self) -> None:
        """Something was queued for the connection: a waiting sender looks again."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def closed(
        self,
        conn: Connection,
        ahead: Envelope,
        deliver: Callable[[Envelope], Awaitable[None]],
        flush: Callable[[], Awaitable[None]],
    ) -> bool:
        """Deliver, as they are queued, the room's events between what ``conn`` has and
        ``ahead``, for up to ``seconds``: True once the gap is closed, False when the
        stored events must fill the rest. ``flush`` writes what is gathered before a wait."""
        room_id, seq = ahead.room_id, ahead.seq
        assert seq is not None  # noqa: S101 - a room event
        if self.seconds <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        while True:
            last = conn.delivered.get(room_id)
            if last is None or last >= seq - 1:
                return True  # closed (or the room was left meanwhile: nothing to fill)
            following = take_queued(conn, room_id, last + 1)
            if following is not None:
                await deliver(following)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.waiter = loop.create_future()
            try:
                await flush()
                await asyncio.wait_for(self.waiter, remaining)
            except TimeoutError:
                return False
            finally:
                self.waiter = None


def take_queued(conn: Connection, room_id: int, seq: int) -> Envelope | None:
    """The room's event ``seq`` out of the connection's queue, wherever it waits in it
    (None: not queued yet)."""
    queue = conn.queue
    if queue is None:
        return None
    for envelope in queue:
        if envelope.seq == seq and envelope.room_id == room_id and envelope.type != CATCH_UP:
            queue.remove(envelope)
            if not queue:
                conn.queue = None
            return envelope
    return None
