"""Ordered delivery to one connection: its queue, write time-outs, gap repair, slow clients.

Each connection has one sender, the only writer to its socket, running only while the
connection's queue holds something. It takes envelopes from the queue in order, drops what
the client already has, and fills any gap in a room's ``seq`` from the stored events
before sending, so every event reaches the client
once and in order, whatever the broker did. What the stored events are is not this
module's business: the transport hands it a ``StoredEvents`` (the chat package's replay
queries, in their own unit of work).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from starlette.websockets import WebSocket

from cmschat.events import Published
from cmschat.observability import instruments
from cmschat.realtime import protocol, wire
from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import CATCH_UP, CLOSE_SLOW, Connection, caught_up
from cmschat.realtime.gap_wait import GapWait

log = logging.getLogger(__name__)

BATCH = 500
"""Stored events read at a time when catching a room up."""
GATHER_BYTES = 64 * 1024
"""Frames gathered for one write are written once they hold this much text: a large
catch-up or a long queue still leaves in pieces the socket's buffer can take."""


class StoredEvents(Protocol):
    """A room's stored events, for resuming clients and repairing gaps."""

    async def after(
        self, room_id: int, *, after: int, until: int | None, limit: int
    ) -> tuple[list[Published], int | None]:
        """Events with ``after < seq <= until`` in order (at most ``limit``); or none and
        the seq to resync at, when some of them are no longer kept (retention)."""
        ...


class ConnectionOver(Exception):
    """The connection's session ended while it was being served: stop, say nothing."""


class Delivery:
    """The sender of one connection."""

    def __init__(
        self,
        websocket: WebSocket,
        connection: Connection,
        stored: StoredEvents,
        *,
        write_timeout: float,
        gap_wait: float = 0.0,
    ) -> None:
        self.ws = websocket
        self.conn = connection
        self.stored = stored
        self.write_timeout = write_timeout
        self.gaps = GapWait(gap_wait)  # an event ahead of its room's next waits for those
        self.write_now: wire.WriteFrame | None = websocket.scope.get(wire.SCOPE_KEY)
        """The server protocol's direct write of a pre-built frame (``realtime/transport.py``);
        None under another server."""
        self._gathered: list[Envelope] = []
        """Frames taken from the queue for the next direct write, in order."""
        self._gathered_bytes = 0

    def drain_now(self, written: list[str] | None = None) -> bool:
        """Send what the queue holds now, without waiting, when nothing in it needs to (the
        usual case: a room's events in order and acks, to a socket that takes them): True
        once the queue is empty, False when the rest is for ``drain``, in a task (a gap to
        fill from the stored events, a catch-up, a socket that would make the write wait).
        What was gathered and not yet written is then the first thing ``drain`` writes.
        ``written``: the frames written are added to it, for the caller to count (a
        ``fanout.WritePass`` counts a whole pass at once); None: counted here."""
        conn = self.conn
        if self.write_now is None:
            return False
        queue = conn.queue
        if queue is not None and len(queue) == 1 and not self._gathered:
            written_alone = self._write_alone(queue[0], written)
            if written_alone is not None:
                return written_alone
        delivered = conn.delivered
        while not conn.close_requested and (queue := conn.queue):
            envelope = queue[0]
            if conn.ended or envelope.type == CATCH_UP:
                return False
            seq = envelope.seq
            # An ack or the room's next event (~10 frames a send under load): the general
            # case's steps without its four calls.
            if seq is None or (
                envelope.type != "member.left" and delivered.get(envelope.room_id) == seq - 1
            ):
                queue.popleft()
                if not queue:
                    conn.queue = None
                self._gathered.append(envelope)
                self._gathered_bytes += len(envelope.frame)
                if seq is not None:
                    delivered[envelope.room_id] = seq
            else:
                last = self._place(envelope)
                if last is not None and seq > last + 1:
                    return False  # a gap: filled from the stored events, which waits
                conn.take()
                if last is not None:
                    self._gather(envelope)
                    self._delivered(envelope)
            if self._gathered_bytes >= GATHER_BYTES and not self._write_gathered(written):
                return False
        return self._write_gathered(written)

    def _write_alone(self, envelope: Envelope, written: list[str] | None) -> bool | None:
        """The usual queue of a lone send's fan-out: one frame, a direct one or the room's
        next event, written as the loop below would, without gathering it first (a few
        calls per delivered frame fewer). None: anything else, left to the loop."""
        conn = self.conn
        if conn.close_requested or conn.ended or envelope.type == "member.left":
            return None
        seq = envelope.seq
        if seq is not None and conn.delivered.get(envelope.room_id) != seq - 1:
            return None  # not the next one: skipped, a gap or a room not followed
        if envelope.type == CATCH_UP:
            return None
        assert self.write_now is not None  # noqa: S101 - checked by the caller
        if not self.write_now(envelope.wire):
            return None  # the loop gathers it and hands it to ``drain``
        conn.queue = None
        if seq is not None:
            conn.delivered[envelope.room_id] = seq
        if written is None:
            instruments.frames_written([envelope.frame])
        else:
            written.append(envelope.frame)
        return True

    async def drain(self) -> None:
        """Send what the connection's queue holds, in order, until it is empty or the
        connection ends (the endpoint runs this again when something more is queued).

        Frames that can go straight to the transport are gathered while the queue holds
        more and leave in one write (one system call for several events and acks: under
        load a connection's queue holds a batch's worth at once); they are written before
        anything that waits (a stored-events read, the ASGI path), so order is kept.
        """
        try:
            await self._flush()  # what ``drain_now`` gathered and could not write
            while not self.conn.close_requested:
                envelope = self.conn.take()
                if envelope is None:
                    if not self._gathered:
                        return
                    await self._flush()  # then look again: more may be queued meanwhile
                elif envelope.type == CATCH_UP:
                    caught_up(self.conn, envelope.room_id)
                    await self._catch_up(envelope.room_id, until=None)
                elif envelope.seq is None:
                    await self.write(envelope.frame, envelope)
                else:
                    await self._send_sequenced(envelope)
        except ConnectionOver:
            return
        finally:
            self._gathered = []
            self._gathered_bytes = 0

    async def write(self, frame: str, envelope: Envelope | None = None) -> None:
        """The only way out to the socket: nothing passes once the session has ended, and
        a client that takes nothing for ``write_timeout`` seconds is cut off (1013).

        An envelope's frame goes straight to the transport, as the bytes built once for
        every recipient, gathered with the frames after it into one write (``_flush``);
        only a socket that would make the write wait (or another server) takes the ASGI
        path with its timer.
        """
        if self.conn.ended:
            raise ConnectionOver
        if envelope is not None and self.write_now is not None:
            self._gather(envelope)
            if self._gathered_bytes >= GATHER_BYTES:
                await self._flush()
            return
        await self._flush()
        await self._send_asgi(frame)

    def _gather(self, envelope: Envelope) -> None:
        self._gathered.append(envelope)
        self._gathered_bytes += len(envelope.frame)

    def _write_gathered(self, written: list[str] | None = None) -> bool:
        """Write the gathered frames in one piece if the socket takes it now (True), else
        keep them (False); count them, or add them to ``written`` for the caller to."""
        gathered = self._gathered
        if not gathered:
            return True
        assert self.write_now is not None  # noqa: S101 - gathered only with a direct write
        data = gathered[0].wire if len(gathered) == 1 else b"".join([e.wire for e in gathered])
        if not self.write_now(data):
            return False
        self._gathered = []
        self._gathered_bytes = 0
        if written is None:
            instruments.frames_written([envelope.frame for envelope in gathered])
        else:
            written.extend([envelope.frame for envelope in gathered])
        return True

    async def _flush(self) -> None:
        """Write the gathered frames: at once in one piece when the socket takes it, else
        one by one the ASGI way (which waits, under the write time-out)."""
        if self._write_gathered():
            return
        gathered, self._gathered, self._gathered_bytes = self._gathered, [], 0
        for envelope in gathered:
            if self.conn.ended:
                raise ConnectionOver
            await self._send_asgi(envelope.frame)

    async def _send_asgi(self, frame: str) -> None:
        """``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` can swallow the
        cancellation that ends this connection's tasks, leaving the close waiting forever."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.ws.send_text(frame)
        except TimeoutError:
            self.conn.close(CLOSE_SLOW)
            raise ConnectionOver from None

    def _place(self, envelope: Envelope) -> int | None:
        """The seq this connection had of a room event's room before it; None when the
        event is not for it (a room it does not follow, or one it already has)."""
        room_id, seq = envelope.room_id, envelope.seq
        assert seq is not None  # noqa: S101 - a room event
        last = self.conn.delivered.get(room_id)
        if last is None:
            if envelope.type != "member.joined" or envelope.user_id != self.conn.user_id:
                return None  # a room this connection does not (yet) follow
            last = self.conn.delivered[room_id] = seq - 1
        if seq <= last:
            return None  # already sent, from the backlog or a repair
        return last

    async def _send_sequenced(self, envelope: Envelope) -> None:
        last = self._place(envelope)
        if last is None:
            return
        assert envelope.seq is not None  # noqa: S101 - a room event
        if envelope.seq > last + 1 and not await self.gaps.closed(
            self.conn, envelope, self._deliver, self._flush
        ):
            await self._catch_up(envelope.room_id, until=envelope.seq - 1)
        await self._deliver(envelope)

    async def _deliver(self, envelope: Envelope) -> None:
        await self.write(envelope.frame, envelope)
        self._delivered(envelope)

    def _delivered(self, envelope: Envelope) -> None:
        assert envelope.seq is not None  # noqa: S101 - a room event
        self.conn.delivered[envelope.room_id] = envelope.seq
        if envelope.type == "member.left" and envelope.user_id == self.conn.user_id:
            del self.conn.delivered[envelope.room_id]

    async def _catch_up(self, room_id: int, *, until: int | None) -> None:
        """Send the room's stored events after what this connection has (up to ``until``)."""
        while room_id in self.conn.delivered:
            # Shielded: a connection closing mid-read must not cut a pooled connection off
            # in the middle of a query.
            await self._flush()  # what is gathered goes before this room's stored events
            batch, resync_at = await asyncio.shield(
                self.stored.after(
                    room_id, after=self.conn.delivered[room_id], until=until, limit=BATCH
                )
            )
            if resync_at is not None:
                frame = {"type": "resync_required", "room_id": room_id, "seq": resync_at}
                await self.write(protocol.dumps(frame))
                self.conn.delivered[room_id] = resync_at
                return
            for event in batch:
                await self._deliver(protocol.envelope_of(event))
                if room_id not in self.conn.delivered:
                    return
            if len(batch) < BATCH:
                return
