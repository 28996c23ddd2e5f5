"""``GET /api/v1/ws`` once signed in: resume, then relay events both ways (contract.md).

(``gateway.py`` accepts the socket and reads the auth frame.)

The connection's own task reads frames as they come (so keep-alive pings are answered
whatever the load) and never waits on a transaction. What is queued for the socket is
written by ``outgoing.py`` (with ``cmschat.realtime.delivery``), in a task of its own only
while something in it must be waited on; the worker (``inbox.py``) exists while frames
wait to be acted on, in order. Answers that need no work (``pong``, ``busy``) are written
at once when nothing is queued before them. An idle connection thus holds one task, not
four (memory: see docs/performance.md, section 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from cmschat.context import AppContext
from cmschat.jsonshape import shape_problem
from cmschat.realtime import protocol, signals
from cmschat.realtime.connections import (
    CLOSE_SESSION_ENDED,
    CLOSE_SLOW,
    Connection,
    offer_catch_up,
)
from cmschat.realtime.delivery import Delivery
from cmschat.websocket import frames
from cmschat.websocket.actions import PONG, FrameActions
from cmschat.websocket.backlog import RoomBacklog
from cmschat.websocket.caller import Caller
from cmschat.websocket.handshake import log_too_deep, read_opening
from cmschat.websocket.inbox import Inbox
from cmschat.websocket.outgoing import CLOSE_GOING_AWAY, Outgoing

log = logging.getLogger(__name__)

CLOSE_WITHIN_SECONDS = 2.0
"""How long the close frame may wait for a socket that takes nothing."""


class ClientSocket:
    """One authenticated WebSocket connection's life, from ``ready`` to its close."""

    def __init__(
        self,
        websocket: WebSocket,
        context: AppContext,
        user: Caller,
        conn: Connection,
        *,
        resume: dict[str, int],
        greeting: dict[str, Any],
    ) -> None:
        self.ws = websocket
        self.context = context
        self.user = user
        self.settings = context.settings.realtime
        self.conn = conn
        self.out = Outgoing(
            Delivery(
                websocket,
                self.conn,
                RoomBacklog(context, user),
                write_timeout=self.settings.write_timeout_seconds,
                gap_wait=self.settings.gap_wait_ms / 1000,
            ),
            conn,
            context.hub.writes,
        )
        self.answer, self.reply = self.out.answer, self.out.reply
        # Frames are read as they come (so the socket's own pings are never stuck behind a
        # slow send) and acted on in order by the inbox's worker.
        self.inbox = Inbox(
            context, conn, FrameActions(context, user, self.conn, self.reply), self.answer
        )
        self._loop = asyncio.get_running_loop()
        self._reading_task: asyncio.Task[Any] | None = None
        self._heard_at = 0.0
        """When the reading task last began waiting for a frame (the loop's clock)."""
        self._idle_timer: asyncio.TimerHandle | None = None
        self.reader: asyncio.Task[Any] | None = None
        """This connection's own task, while it waits for a frame (cancelled to close)."""
        self.opening: tuple[dict[str, int], dict[str, Any]] | None = (resume, greeting)
        """The auth frame's ``resume`` and the ``ready`` frame's ``user``, until used."""
        self.conn.on_close = self._stop_reading

    async def run(self) -> None:
        """Subscribe, send ``ready``, queue the catch-up, then relay until closed."""
        hub = self.context.hub
        # Known to the hub before the token is checked again below: a revocation
        # committed after the auth frame's check either reaches this connection as an
        # event or is seen by that second check.
        hub.add(self.conn, set())
        try:
            contacts = await self._open()
            if contacts is None:
                return
            try:
                await self._relay()
            finally:
                await self._leave(contacts)
        finally:
            hub.remove(self.conn)

    async def _open(self) -> tuple[int, ...] | None:
        """Everything up to ``ready`` and the catch-up; the user's contacts, or None if the
        session ended meanwhile. Its own frame: what only the opening needs (the rooms,
        ``resume``, the greeting) is let go before the connection idles."""
        assert self.opening is not None  # noqa: S101 - run once
        (resume, greeting), self.opening = self.opening, None
        assert self.conn.token_id is not None  # noqa: S101 - set from the signed-in token
        ended, rooms, contacts = await read_opening(
            self.context,
            user_id=self.user.id,
            username=self.user.username,
            token_id=self.conn.token_id,
        )
        if ended is not None:
            self.conn.end(CLOSE_SESSION_ENDED, ended)
        if self.conn.ended:
            await self.ws.close(code=self.conn.close_code, reason=self.conn.close_reason)
            return None
        # Subscribe first, then read the backlog: nothing published in between is lost,
        # and the sender drops live events the backlog already covered.
        for room_id, last_seq in rooms.items():
            seen = resume.get(str(room_id))
            self.conn.delivered[room_id] = last_seq if seen is None else min(seen, last_seq)
        hub = self.context.hub
        for room_id in rooms:
            hub.follow(self.conn, room_id)
        presence = self.context.presence
        if await presence.arrived(self.user.id):
            await self._announce("online", contacts)
        try:
            await self.ws.send_text(
                protocol.dumps(
                    {
                        "type": "ready",
                        "user": greeting,
                        "rooms": {str(room_id): last_seq for room_id, last_seq in rooms.items()},
                        "online": await presence.online_among(contacts),
                    }
                )
            )
        except BaseException:
            await self._leave(contacts)
            raise
        for room_id, last_seq in rooms.items():
            if self.conn.delivered[room_id] < last_seq:
                offer_catch_up((self.conn,), room_id)
        return contacts

    async def _leave(self, contacts: tuple[int, ...]) -> None:
        """Stop routing to this connection; the user's last one going says so."""
        hub, presence, user_id = self.context.hub, self.context.presence, self.user.id
        hub.remove(self.conn)
        if hub.connections_of(user_id) or not await presence.left(user_id):
            return
        if hub.connections_of(user_id):
            # A connection opened while this one left: its claim may have gone first.
            await presence.arrived(user_id)
            return
        await self._announce("offline", contacts)

    async def _announce(self, status: str, contacts: tuple[int, ...]) -> None:
        await signals.announce_presence(
            self.context.broker, user_id=self.user.id, status=status, contacts=contacts
        )

    async def _relay(self) -> None:
        self.out.live = True
        self.out.start()
        try:
            await self._receive_loop()
        finally:
            await self.out.stop()  # events queued from now on are not sent
            await self.inbox.stop()
            if self.conn.close_code == CLOSE_SLOW:
                _log_slow_client(self.conn)
            if self.ws.application_state is not WebSocketState.DISCONNECTED:
                # A slow client's socket may take nothing, not even the close frame: give
                # up after a moment (the server's protocol then aborts the connection).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_WITHIN_SECONDS):
                        code, reason = self.conn.close_code, self.conn.close_reason
                        await self.ws.close(code=code, reason=reason)

    def _stop_reading(self) -> None:
        """The connection is to close: wake the task waiting for the client's next frame."""
        if self.reader is not None:
            self.reader.cancel()
            self.reader = None

    async def _next_message(self) -> MutableMapping[str, Any] | None:
        """The client's next message; None once the connection is to close (closed by
        ``_idle_check`` after ``idle_timeout_seconds`` without one).

        One timer per connection, moved on lazily, not ``asyncio.timeout`` around each
        receive: that scheduled and cancelled a timer per frame."""
        task = self.reader = self._reading_task
        self._heard_at = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_at(
                self._heard_at + self.settings.idle_timeout_seconds, self._idle_check
            )
        try:
            return await self.ws.receive()
        except asyncio.CancelledError:
            # Cancelled by ``_stop_reading`` only: anything else (the server stopping)
            # is passed on.
            assert task is not None  # noqa: S101 - called from a task
            if not self.conn.close_requested or task.uncancel() > 0:
                raise
            return None
        finally:
            self.reader = None

    def _idle_check(self) -> None:
        """Close a connection that sent nothing for ``idle_timeout_seconds`` (1001); else
        look again when that time would be up."""
        due = self._heard_at + self.settings.idle_timeout_seconds
        if self.reader is not None and self._loop.time() >= due:
            self._idle_timer = None
            self.conn.close(CLOSE_GOING_AWAY)
        else:
            self._idle_timer = self._loop.call_at(
                max(due, self._loop.time() + 0.001), self._idle_check
            )

    async def _receive_loop(self) -> None:
        self._reading_task = asyncio.current_task()
        try:
            await self._read_frames()
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

    async def _read_frames(self) -> None:
        while not self.conn.close_requested:
            message = await self._next_message()
            if message is None or message["type"] == "websocket.disconnect" or self.conn.ended:
                return
            text = message.get("text")
            if text is None:
                self.reply(protocol.error_frame("bad_frame", "send JSON text frames"))
                continue
            raw = text.encode()
            if len(raw) > self.settings.max_frame_bytes:
                self.reply(
                    protocol.error_frame(
                        "frame_too_large",
                        f"frames are at most {self.settings.max_frame_bytes} bytes",
                        **frames.echo_unparsed(text),
                    )
                )
                continue
            if frames.is_ping(text):
                self.answer(PONG)  # answered at once, however busy the worker is
                continue
            if shape_problem(raw, max_depth=protocol.MAX_NESTING) is not None:  # too deep
                # Refused before any parser recurses into it (json and validation would).
                log_too_deep()
                self.reply(
                    protocol.error_frame(
                        "invalid", f"frames nest at most {protocol.MAX_NESTING} levels deep"
                    )
                )
                continue
            self.inbox.take(text)


def _log_slow_client(conn: Connection) -> None:
    """Say why a slow client was closed (1013)."""
    log.warning(
        "closing a slow client (1013): %s, %d events queued",
        "its queue overflowed" if conn.overflowed else "its socket took nothing in time",
        conn.waiting(),
        extra={
            "event.action": "websocket.slow_client",
            "event.reason": "queue_overflow" if conn.overflowed else "write_timeout",
        },
    )
