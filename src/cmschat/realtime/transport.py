"""uvicorn's wsproto WebSocket protocol, plus: a connection given up on is aborted, and an
open connection keeps only what it still needs.

When a client stops reading, its socket stops draining and uvicorn pauses writing. Ending
the handler then is not enough: uvicorn closes the transport the polite way, which waits
for the buffered bytes to leave — forever, for a client that never reads (one stayed
connected for a whole 172 s test with 2.8 MB stuck). This protocol aborts the transport
instead whenever it is still blocked when the connection is over, and tells a keep-alive
time-out (the client stopped answering pings) apart from an overload close in the log and
in ``cmschat_websocket_closes_total``.

Memory (docs/performance.md, section 1): an idle connection lives for hours, so what each
one holds counts at 15,000 of them. uvicorn gives every connection an ``asyncio.Queue``
(four deques) and an ``asyncio.Event`` (one more), and wsproto keeps the whole HTTP/1.1
handshake machinery (an h11 connection, its buffers, the upgrade request) for the
connection's life. Here the queue and the event are small slotted stand-ins with the same
behaviour for the calls uvicorn makes, and the handshake is dropped once it is done.

Clients' whole masked text frames, what they send most, are read without wsproto when it
is between frames (``client_frames``), with the same events, pauses and close codes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from cmschat.observability import instruments as m
from cmschat.realtime import client_frames, wire

log = logging.getLogger(__name__)

_CLOSE_ALREADY_SENT = (ConnectionState.LOCAL_CLOSING, ConnectionState.CLOSED)


class Inbox:
    """uvicorn's receive queue (``put_nowait``, ``get``, ``empty``) for its one reader.

    uvicorn pauses reading after each complete message until the app takes it, so this
    holds one or two events: a list and at most one waiting future do, where an
    ``asyncio.Queue`` costs four deques per connection.
    """

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, event: Any) -> None:
        """Queue an event and wake the reader."""
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        """Whether no event is waiting."""
        return not self._events

    async def get(self) -> Any:
        """The next event, waiting for one if need be (one reader at a time)."""
        while not self._events:
            if self._waiter is not None:
                raise RuntimeError("another task is already receiving on this WebSocket")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._events.pop(0)


class Writable:
    """uvicorn's ``writable`` flag (``set``, ``clear``, ``is_set``, ``wait``) without the
    deque an ``asyncio.Event`` allocates up front: waiters are listed only while the
    socket's buffer is full, which for an idle connection is never."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Whether the transport takes writes."""
        return self._set

    def set(self) -> None:
        """The transport takes writes again: wake every waiting writer."""
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """The transport's buffer is full: writers wait."""
        self._set = False

    async def wait(self) -> bool:
        """Return once the transport takes writes."""
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class AbortingWSProtocol(WSProtocol):
    """``ws=`` for uvicorn: as ``wsproto``, but never waits on an unwritable socket to close,
    and holds less per open connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        """As uvicorn; once the handshake is accepted, keep only the WebSocket framing."""
        await super().send(message)
        if message["type"] == "websocket.accept" and isinstance(self.conn, WSConnection):
            # From now on wsproto's WSConnection hands every call to its established
            # Connection, which has the same send/receive_data/events/state; the h11
            # handshake behind it is never used again.
            established = self.conn.connection
            if established is not None:
                self.conn = established  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """As uvicorn, but whole masked text frames at the start of ``data`` are read here
        when wsproto is between frames (``client_frames``); the rest goes to wsproto."""
        if (
            not self.close_sent
            and self.buffer.value is None
            and client_frames.between_frames(self.conn)
        ):
            texts, used = client_frames.read_text_frames(data, self.config.ws_max_size)
            if texts:
                # The same events, in the same order, as uvicorn's handle_message; like it,
                # every message already received is queued though reading pauses after
                # the first.
                put = self.queue.put_nowait
                for text in texts:
                    put({"type": "websocket.receive", "text": text})
                if not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()
                if used == len(data):
                    return
                data = data[used:]
        super().data_received(data)

    async def run_asgi(self) -> None:
        """Run the app; if it is done while the socket cannot be written, drop the socket."""
        if not self.config.ws_per_message_deflate:
            self.scope[wire.SCOPE_KEY] = self.write_frame  # type: ignore[literal-required]
        await super().run_asgi()
        if not self.writable.is_set():
            # Even after a close frame: closing politely waits for the client to read.
            self.transport.abort()

    def write_frame(self, data: bytes) -> bool:
        """Write a whole pre-built frame (``wire.text_frame``) if the socket takes it now;
        False when it would have to wait or is closing (the caller then sends the ASGI way,
        which waits, under its write time-out). Whole frames only, so they never interleave
        with uvicorn's own pings or close frame."""
        if (
            self.writable.is_set()
            and self.handshake_complete
            and not self.close_sent
            and not self.response_started
            and not self.disconnected
            and self.conn.state is ConnectionState.OPEN
            and not self.transport.is_closing()
        ):
            self.transport.write(data)
            return True
        return False

    def handle_close(self, event: CloseConnection) -> None:
        """As uvicorn, but a malformed client frame gets a close frame with its code.

        On a parse failure (1002 protocol error, 1007 bad UTF-8) wsproto's ``events()``
        yields a ``CloseConnection`` while its state stays OPEN; uvicorn answers only a
        state of REMOTE_CLOSING, so it dropped the socket without a word and the client
        saw 1006. RFC 6455 7.1.7 (_Fail the WebSocket Connection_) wants the close frame.
        A close the client sent (REMOTE_CLOSING) or the echo of ours (``close_sent``) is
        not OPEN, so the handshakes are uvicorn's, unchanged.
        """
        if (
            not self.close_sent
            and self.conn.state is ConnectionState.OPEN
            and not self.transport.is_closing()
        ):
            # The state becomes LOCAL_CLOSING: the app's later sends fail as after a
            # client's close (ClientDisconnected), and uvicorn writes nothing more.
            self.transport.write(self.conn.send(CloseConnection(event.code, event.reason)))
        super().handle_close(event)

    def shutdown(self) -> None:
        """As uvicorn, unless a close frame already went out while the socket is still
        flushing (a failed connection above, or a client's close answered): wsproto would
        refuse a second one, and the exception would stop the server's shutdown loop."""
        if not self.close_sent and self.conn.state in _CLOSE_ALREADY_SENT:
            self.stop_keepalive()
            self.transport.close()
            return
        super().shutdown()

    def keepalive_timeout(self) -> None:
        """No pong in time: uvicorn closes with 1011; counted and logged as what it is."""
        if not self.close_sent and not self.transport.is_closing():
            m.WS_CLOSES.labels(reason="keepalive_timeout").inc()
            log.info(
                "closing a WebSocket that stopped answering pings (1011)",
                extra={"event.action": "websocket.keepalive_timeout"},
            )
        super().keepalive_timeout()
        if not self.writable.is_set():
            self.transport.abort()
