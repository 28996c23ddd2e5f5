"""The way out to one connection's socket: what is queued is written soon, in order, and
answers that need no work are written at once when nothing is queued before them.

Writing what is queued needs no task unless something in it has to be waited on (a gap
filled from the stored events, a catch-up, a socket that takes nothing now:
``Delivery.drain_now``); a task per write was a tenth of the fan-out's CPU under
``bench/ws_sends.py`` (docs/performance.md, "Issue 16, fifth round").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cmschat.observability import instruments
from cmschat.realtime import protocol, wire
from cmschat.realtime.connections import Connection
from cmschat.realtime.delivery import Delivery
from cmschat.realtime.fanout import WritePass

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001


class Outgoing:
    """One connection's sender: scheduled when something is queued, a task only while it
    waits."""

    def __init__(
        self, delivery: Delivery, conn: Connection, writes: WritePass | None = None
    ) -> None:
        self.delivery = delivery
        self.conn = conn
        self.live = False
        """Set once ``ready`` is sent: events queued before then wait for it."""
        self.sending = False
        """A write of what is queued is scheduled or under way: answers queue behind it."""
        self.sender: asyncio.Task[None] | None = None
        """The sender's task, while what is queued needs waiting on."""
        self._writes = writes if writes is not None else WritePass()
        """The pass that writes this connection's queue with those of the others that have
        something queued (the hub's: a room's fan-out in one callback)."""
        self._write = self._write_queued
        conn.on_queued = self.start

    def start(self) -> None:
        """Something was queued: write it in the next write pass.

        Not at once: two turns of the event loop later, so that what the same commit
        brings (its events, then the acks of the sends it holds, made as their senders'
        tasks wake up) leaves in one write."""
        # Checked before the call, not inside it: this runs for every frame queued.
        if self.delivery.gaps.waiter is not None:
            self.delivery.gaps.more_queued()
        if self.live and not self.sending and self.conn.queue:
            self.sending = True
            self._writes.add(self._write)

    def _write_queued(self, frames: list[str]) -> None:
        try:
            written = not self.live or self.delivery.drain_now(frames)
        except Exception:
            # A loop callback's error would only be logged by the loop, with ``sending``
            # left set: nothing queued would be written again and the client never told.
            self.sending = False
            log.debug("a WebSocket failed while sending", exc_info=True)
            self.conn.close(CLOSE_GOING_AWAY)
            return
        if written:
            self.sending = False
        else:
            self.sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        """Run the sender; a socket that fails under it (the client went away) ends the
        connection, as its reading task then learns too."""
        try:
            await self.delivery.drain()
        except Exception:
            log.debug("a WebSocket failed while sending", exc_info=True)
            self.conn.close(CLOSE_GOING_AWAY)
        finally:
            self.sending = False

    async def stop(self) -> None:
        """Send nothing more (the socket is closing)."""
        self.live = False
        if self.sender is not None:
            self.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.sender

    def answer(self, frame: str) -> None:
        """An answer (``busy``, ``pong``) written now as deliveries are, when nothing queued
        for the socket is to go before it (else queued behind it)."""
        conn, write = self.conn, self.delivery.write_now
        if (
            conn.queue is None
            and not self.sending
            and write is not None
            and not conn.close_requested
            and write(wire.text_frame(frame))
        ):
            instruments.frame_written(frame)
            return
        self.reply(frame)

    def reply(self, frame: str) -> None:
        """Queue a frame for this connection only (acks, errors, pongs)."""
        self.conn.offer(protocol.direct(frame))
