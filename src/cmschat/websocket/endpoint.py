"""``GET /api/v1/ws``: authenticate, resume, then relay events both ways (contract.md).

Each connection runs a sender (``cmschat.realtime.delivery``, the only writer to the
socket), a receiver that reads frames as they come, and a worker that acts on them in
order (``actions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cmschat.accounts import auth, sessions
from cmschat.accounts.schemas import UserRead
from cmschat.chat import listing
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS, set_actor, user_actor
from cmschat.errors import CmschatError
from cmschat.observability import tracing
from cmschat.observability.logging import client_address_var, request_id_var
from cmschat.realtime import protocol, signals
from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import CATCH_UP, CLOSE_SESSION_ENDED, CLOSE_SLOW, Connection
from cmschat.realtime.delivery import Delivery, log_slow_client
from cmschat.websocket import frames
from cmschat.websocket.actions import PONG, FrameActions
from cmschat.websocket.backlog import RoomBacklog

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
INBOX_SIZE = 64
CLOSE_WITHIN_SECONDS = 2.0
"""How long the close frame may wait for a socket that takes nothing."""
PING_FRAME = '{"type":"ping"}'


def _origin_allowed(websocket: WebSocket, context: AppContext) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:  # not a browser: nothing for CSRF-style abuse to ride on
        return True
    if origin.rstrip("/") in context.settings.cors_origins:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


@router.websocket("/api/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """``GET /api/v1/ws``: the real-time protocol (see contract.md)."""
    context: AppContext = websocket.app.state.context
    if context.draining or not _origin_allowed(websocket, context):
        await websocket.close(code=CLOSE_POLICY)
        return
    await websocket.accept()
    # Every frame's work runs in this task or tasks it starts, so audit events and log
    # lines of the connection carry its address and one id for the whole connection.
    client_address_var.set(websocket.client.host if websocket.client else None)
    request_id_var.set("ws-" + uuid.uuid4().hex)
    signed_in, resume = await _authenticate(websocket, context)
    if signed_in is None:
        return
    await ClientSocket(websocket, context, signed_in).run(resume)


async def _authenticate(
    websocket: WebSocket, context: AppContext
) -> tuple[auth.SignedIn | None, dict[str, int]]:
    """Read and check the auth frame; on failure close 1008 and return no session."""
    settings = context.settings.realtime
    try:
        text = await asyncio.wait_for(
            websocket.receive_text(), timeout=settings.auth_timeout_seconds
        )
        if protocol.too_deep(text):
            _log_too_deep()
            raise CmschatError("the auth frame is nested too deeply", code="invalid")
        frame = frames.AUTH.validate_json(text)
        async with context.db.unit_of_work(ANONYMOUS) as session:
            signed_in = await auth.authenticate(
                session,
                token=frame.token,
                policy=context.settings.auth,
                token_key=context.token_key,
                clock=context.clock,
            )
            set_actor(session, signed_in.actor, name=signed_in.user.username)
        if signed_in.user.must_change_password:
            raise CmschatError("change your password first", code="password_change_required")
        return signed_in, frame.resume
    except (TimeoutError, WebSocketDisconnect):
        reason = "authentication timed out"
    except ValidationError:
        reason = 'the first frame must be {"type": "auth", "token": ...}'
    except CmschatError as exc:
        reason = exc.message
    with contextlib.suppress(Exception):
        await websocket.send_text(protocol.error_frame("unauthorized", reason))
        await websocket.close(code=CLOSE_POLICY, reason=reason[:120])
    return None, {}


def _log_too_deep() -> None:
    log.warning(
        "refused a WebSocket frame nested deeper than %d levels",
        protocol.MAX_NESTING,
        extra={"event.action": "ws.frame_refused", "event.reason": "too_deep"},
    )


class ClientSocket:
    """One authenticated WebSocket connection's life, from ``ready`` to its close."""

    def __init__(self, websocket: WebSocket, context: AppContext, signed_in: auth.SignedIn) -> None:
        self.ws = websocket
        self.context = context
        self.user = user = signed_in.user
        self.settings = context.settings.realtime
        token = signed_in.token
        self.conn = Connection(
            user_id=user.id,
            queue_size=self.settings.send_queue_size,
            token_id=token.id,
            role=user.role,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
        )
        self.delivery = Delivery(
            websocket,
            self.conn,
            RoomBacklog(context, user),
            write_timeout=self.settings.write_timeout_seconds,
        )
        self.actions = FrameActions(context, user, self.conn, self.reply)
        # Frames are read as they come (so the socket's own pings are never stuck behind a
        # slow send) and acted on in order by one worker.
        self.inbox: asyncio.Queue[str] = asyncio.Queue(maxsize=INBOX_SIZE)

    async def run(self, resume: dict[str, int]) -> None:
        """Subscribe, send ``ready``, queue the catch-up, then relay until closed."""
        hub = self.context.hub
        # Known to the hub before the token is checked again below: a revocation
        # committed after the auth frame's check either reaches this connection as an
        # event or is seen by that second check.
        hub.add(self.conn, set())
        try:
            await self._run(resume)
        finally:
            hub.remove(self.conn)

    async def _run(self, resume: dict[str, int]) -> None:
        async with self.context.db.unit_of_work(
            user_actor(self.user.id), actor_name=self.user.username
        ) as session:
            assert self.conn.token_id is not None  # noqa: S101 - set from the signed-in token
            state = (
                await sessions.check_sessions(
                    session,
                    token_ids=[self.conn.token_id],
                    policy=self.context.settings.auth,
                    now=self.context.clock.now(),
                )
            )[self.conn.token_id]
            rooms = await listing.room_positions(session, user_id=self.user.id)
            contacts = await listing.contacts_of(session, user_id=self.user.id)
        if state.ended is not None:
            self.conn.end(CLOSE_SESSION_ENDED, state.ended)
        if self.conn.ended:
            await self.ws.close(code=self.conn.close_code, reason=self.conn.close_reason)
            return
        # Subscribe first, then read the backlog: nothing published in between is lost,
        # and the sender drops live events the backlog already covered.
        for room_id, last_seq in rooms.items():
            seen = resume.get(str(room_id))
            self.conn.delivered[room_id] = last_seq if seen is None else min(seen, last_seq)
        hub = self.context.hub
        for room_id in rooms:
            hub.follow(self.conn, room_id)
        if len(hub.connections_of(self.user.id)) == 1:
            await self._announce("online", contacts)
        try:
            await self.ws.send_text(
                protocol.dumps(
                    {
                        "type": "ready",
                        "user": UserRead.model_validate(self.user).model_dump(mode="json"),
                        "rooms": {str(room_id): last_seq for room_id, last_seq in rooms.items()},
                        "online": [u for u in contacts if hub.connections_of(u)],
                    }
                )
            )
            for room_id, last_seq in rooms.items():
                if self.conn.delivered[room_id] < last_seq:
                    self.conn.offer(Envelope(room_id=room_id, seq=None, type=CATCH_UP, frame=""))
            await self._relay()
        finally:
            hub.remove(self.conn)
            if not hub.connections_of(self.user.id):
                await self._announce("offline", contacts)

    async def _announce(self, status: str, contacts: tuple[int, ...]) -> None:
        await signals.announce_presence(
            self.context.broker, user_id=self.user.id, status=status, contacts=contacts
        )

    async def _relay(self) -> None:
        tasks = [
            asyncio.create_task(self.delivery.run()),
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._work_loop()),
            asyncio.create_task(self.conn.closing.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.conn.close_code == CLOSE_SLOW:
                log_slow_client(self.conn)
            if self.ws.application_state is not WebSocketState.DISCONNECTED:
                # A slow client's socket may take nothing, not even the close frame: give
                # up after a moment (the server's protocol then aborts the connection).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_WITHIN_SECONDS):
                        code, reason = self.conn.close_code, self.conn.close_reason
                        await self.ws.close(code=code, reason=reason)

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(
                    self.ws.receive(), timeout=self.settings.idle_timeout_seconds
                )
            except TimeoutError:
                self.conn.close(CLOSE_GOING_AWAY)
                return
            if message["type"] == "websocket.disconnect" or self.conn.ended:
                return
            text = message.get("text")
            if text is None:
                self.reply(protocol.error_frame("bad_frame", "send JSON text frames"))
                continue
            if len(text.encode()) > self.settings.max_frame_bytes:
                self.reply(
                    protocol.error_frame(
                        "frame_too_large",
                        f"frames are at most {self.settings.max_frame_bytes} bytes",
                    )
                )
                continue
            if text.strip() == PING_FRAME:
                self.reply(PONG)  # answered at once, however busy the worker is
                continue
            if protocol.too_deep(text):
                # Refused before any parser recurses into it (json and validation would).
                _log_too_deep()
                self.reply(
                    protocol.error_frame(
                        "invalid", f"frames nest at most {protocol.MAX_NESTING} levels deep"
                    )
                )
                continue
            try:
                self.inbox.put_nowait(text)
            except asyncio.QueueFull:
                self.reply(
                    protocol.error_frame(
                        "busy",
                        "too many frames in flight; send again after the acks arrive",
                        **frames.echo(text),
                    )
                )

    async def _work_loop(self) -> None:
        """Act on client frames one at a time, in the order they came."""
        while True:
            text = await self.inbox.get()
            # Shielded: a frame being handled (a message being stored) finishes even if the
            # socket drops meanwhile; the client's retry with its client_id then finds it.
            await asyncio.shield(tracing.traced("websocket.frame", self.actions.handle(text)))

    def reply(self, frame: str) -> None:
        """Queue a frame for this connection only (acks, errors, pongs)."""
        self.conn.offer(protocol.direct(frame))
