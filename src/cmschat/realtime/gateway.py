"""The WebSocket endpoint: authenticate, resume, then relay events both ways.

Each connection runs two tasks. The receiver reads client frames and acts on them. The
sender is the only writer to the socket: it takes envelopes from the connection's queue
in order, drops what the client already has, and fills any gap in a room's ``seq`` from
the database before sending — so every event reaches the client once and in order,
whatever the broker did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cmschat.accounts import auth, sessions
from cmschat.accounts.schemas import UserRead
from cmschat.chat import messages
from cmschat.chat.models import Room, RoomMember
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS, set_actor, user_actor
from cmschat.errors import CmschatError
from cmschat.observability import tracing
from cmschat.observability.logging import client_address_var, request_id_var
from cmschat.observability.outages import classify, outages
from cmschat.realtime import presence, protocol, replay
from cmschat.realtime.broker import Envelope
from cmschat.realtime.connections import CATCH_UP, CLOSE_SESSION_ENDED, CLOSE_SLOW, Connection
from cmschat.realtime.publish import publish_after_commit

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001
INBOX_SIZE = 64
CLOSE_WITHIN_SECONDS = 2.0
"""How long the close frame may wait for a socket that takes nothing."""
PING_FRAME = '{"type":"ping"}'
PONG = protocol.dumps({"type": "pong"})


def _origin_allowed(websocket: WebSocket, context: AppContext) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:  # not a browser: nothing for CSRF-style abuse to ride on
        return True
    if origin.rstrip("/") in context.settings.cors_origins:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


@router.websocket("/api/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """``GET /api/v1/ws``: the real-time protocol (see docs/realtime.md)."""
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
    await Session(websocket, context, signed_in).run(resume)


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
        frame = protocol.AUTH.validate_json(text)
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


class _SessionOver(Exception):
    """The connection's session ended while a frame was being handled: undo, say nothing."""


class Session:
    """One authenticated connection's life."""

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
        self._typing_at: dict[int, float] = {}
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
            rooms = dict(
                (
                    await session.execute(
                        select(Room.id, Room.last_seq)
                        .join(RoomMember, RoomMember.room_id == Room.id)
                        .where(RoomMember.user_id == self.user.id)
                    )
                ).all()
            )
            contacts = await presence.contacts_of(session, user_id=self.user.id)
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
        if not contacts:
            return
        try:
            await self.context.broker.publish(
                [presence.presence_envelope(self.user.id, status, contacts)]
            )
        except Exception:
            log.warning("could not announce presence", exc_info=True)

    async def _relay(self) -> None:
        tasks = [
            asyncio.create_task(self._send_loop()),
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
                _log_slow_client(self.conn)
            if self.ws.application_state is not WebSocketState.DISCONNECTED:
                # A slow client's socket may take nothing, not even the close frame: give
                # up after a moment (the server's protocol then aborts the connection).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_WITHIN_SECONDS):
                        code, reason = self.conn.close_code, self.conn.close_reason
                        await self.ws.close(code=code, reason=reason)

    # -- sending ---------------------------------------------------------------------

    async def _send_loop(self) -> None:
        with contextlib.suppress(_SessionOver):
            while True:
                envelope = await self.conn.queue.get()
                if envelope.type == CATCH_UP:
                    await self._catch_up(envelope.room_id, until=None)
                elif envelope.seq is None:
                    await self._write(envelope.frame)
                else:
                    await self._send_sequenced(envelope)

    async def _write(self, frame: str) -> None:
        """The only way out to the socket: nothing passes once the session has ended, and
        a client that takes nothing for ``write_timeout_seconds`` is cut off (1013).

        ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` can swallow the
        cancellation that ends this connection's tasks, leaving the close waiting forever.
        """
        if self.conn.ended:
            raise _SessionOver
        try:
            async with asyncio.timeout(self.settings.write_timeout_seconds):
                await self.ws.send_text(frame)
        except TimeoutError:
            self.conn.close(CLOSE_SLOW)
            raise _SessionOver from None

    async def _send_sequenced(self, envelope: Envelope) -> None:
        room_id, seq = envelope.room_id, envelope.seq
        assert seq is not None  # noqa: S101 - sequenced by the caller's check
        last = self.conn.delivered.get(room_id)
        if last is None:
            if envelope.type != "member.joined" or envelope.user_id != self.user.id:
                return  # a room this connection does not (yet) follow
            last = self.conn.delivered[room_id] = seq - 1
        if seq <= last:
            return  # already sent, from the backlog or a repair
        if seq > last + 1:
            await self._catch_up(room_id, until=seq - 1)
        await self._deliver(envelope)

    async def _deliver(self, envelope: Envelope) -> None:
        await self._write(envelope.frame)
        assert envelope.seq is not None  # noqa: S101
        self.conn.delivered[envelope.room_id] = envelope.seq
        if envelope.type == "member.left" and envelope.user_id == self.user.id:
            del self.conn.delivered[envelope.room_id]

    async def _catch_up(self, room_id: int, *, until: int | None) -> None:
        """Send the room's stored events after what this connection has (up to ``until``)."""
        while room_id in self.conn.delivered:
            # Shielded: a connection closing mid-read must not cut a pooled connection off
            # in the middle of a query.
            batch, resync_at = await asyncio.shield(
                self._load(room_id, after=self.conn.delivered[room_id], until=until)
            )
            if resync_at is not None:
                frame = {"type": "resync_required", "room_id": room_id, "seq": resync_at}
                await self._write(protocol.dumps(frame))
                self.conn.delivered[room_id] = resync_at
                return
            for envelope in batch:
                await self._deliver(envelope)
                if room_id not in self.conn.delivered:
                    return
            if len(batch) < replay.BATCH:
                return

    async def _load(
        self, room_id: int, *, after: int, until: int | None
    ) -> tuple[list[Envelope], int | None]:
        """The next stored events, or the seq to resync at when they are no longer kept."""
        async with self.context.db.unit_of_work(
            user_actor(self.user.id), actor_name=self.user.username
        ) as session:
            resync_at = await replay.resync_point(session, room_id=room_id, after=after)
            if resync_at is not None:
                return [], resync_at
            return await replay.load_events(
                session, room_id=room_id, after=after, until=until
            ), None

    # -- receiving -------------------------------------------------------------------

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
                self._reply(protocol.error_frame("bad_frame", "send JSON text frames"))
                continue
            if len(text.encode()) > self.settings.max_frame_bytes:
                self._reply(
                    protocol.error_frame(
                        "frame_too_large",
                        f"frames are at most {self.settings.max_frame_bytes} bytes",
                    )
                )
                continue
            if text.strip() == PING_FRAME:
                self._reply(PONG)  # answered at once, however busy the worker is
                continue
            if protocol.too_deep(text):
                # Refused before any parser recurses into it (json and validation would).
                _log_too_deep()
                self._reply(
                    protocol.error_frame(
                        "invalid", f"frames nest at most {protocol.MAX_NESTING} levels deep"
                    )
                )
                continue
            try:
                self.inbox.put_nowait(text)
            except asyncio.QueueFull:
                self._reply(
                    protocol.error_frame(
                        "busy",
                        "too many frames in flight; send again after the acks arrive",
                        **_echo(text),
                    )
                )

    async def _work_loop(self) -> None:
        """Act on client frames one at a time, in the order they came."""
        while True:
            text = await self.inbox.get()
            # Shielded: a frame being handled (a message being stored) finishes even if the
            # socket drops meanwhile; the client's retry with its client_id then finds it.
            await asyncio.shield(tracing.traced("websocket.frame", self._handle(text)))

    def _reply(self, frame: str) -> None:
        self.conn.offer(protocol.direct(frame))

    async def _handle(self, text: str) -> None:
        if self.conn.ended:
            return  # the session ended: frames still queued are not acted on
        try:
            frame = protocol.ACTION.validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"][1:]) or "frame"
            self._reply(protocol.error_frame("invalid", f"{where}: {first['msg']}", **_echo(text)))
            return
        if not isinstance(frame, protocol.PingFrame):
            await self._note_activity()
        try:
            if isinstance(frame, protocol.PingFrame):
                self._reply(PONG)
            elif isinstance(frame, protocol.SendFrame):
                await self._send_message(frame)
            elif isinstance(frame, protocol.ReadFrame):
                await self._mark_read(frame)
            else:
                await self._typing(frame)
        except CmschatError as exc:
            self._reply(
                protocol.error_frame(exc.code, exc.message, **protocol.details(exc), **_echo(text))
            )
        except _SessionOver:
            pass  # rolled back; the connection is closing with the session's code
        except Exception as error:
            self._reply(_failure_frame(error, f"websocket {frame.type}", **_echo(text)))

    async def _send_message(self, frame: protocol.SendFrame) -> None:
        async with self.context.db.unit_of_work(
            user_actor(self.user.id), actor_name=self.user.username
        ) as session:
            view, _created, events = await messages.send_message(
                session,
                user=self.user,
                room_id=frame.room_id,
                content=frame.content,
                client_id=frame.client_id,
                reply_to=frame.reply_to,
                max_length=self.context.settings.chat.max_message_length,
                attachment_ids=frame.attachment_ids,
                limiter=self.context.send_limiter,
            )
            publish_after_commit(session, self.context.broker, events)
            if self.conn.ended:
                raise _SessionOver  # revoked meanwhile: the message must not be stored
        self._reply(
            protocol.dumps(
                {
                    "type": "ack",
                    "client_id": frame.client_id,
                    "message": view.model_dump(mode="json"),
                }
            )
        )

    async def _note_activity(self) -> None:
        """Real use (sends, reads, typing; not pings) keeps the session alive, as HTTP does."""
        now = self.context.clock.now()
        policy = self.context.settings.auth
        seen = self.conn.last_used_at
        if seen is not None and now - seen < sessions.refresh_interval(policy):
            return
        assert self.conn.token_id is not None  # noqa: S101 - set from the signed-in token
        try:
            async with self.context.db.unit_of_work(
                user_actor(self.user.id), actor_name=self.user.username
            ) as session:
                touched = await sessions.touch_sessions(
                    session, token_ids=[self.conn.token_id], now=now, policy=policy
                )
        except Exception as error:
            outage = classify(error)
            if outage is None:
                log.warning("could not record activity on a session", exc_info=True)
            else:
                outages.seen(outage, error, "websocket activity")
            return
        if touched:  # else it has ended: the session check closes the socket
            self.conn.last_used_at = now

    async def _mark_read(self, frame: protocol.ReadFrame) -> None:
        async with self.context.db.unit_of_work(
            user_actor(self.user.id), actor_name=self.user.username
        ) as session:
            _seq, events = await messages.mark_read(
                session, user=self.user, room_id=frame.room_id, message_id=frame.message_id
            )
            publish_after_commit(session, self.context.broker, events)

    async def _typing(self, frame: protocol.TypingFrame) -> None:
        if frame.room_id not in self.conn.rooms:
            raise CmschatError("no such room", code="not_found")
        now = time.monotonic()
        if now - self._typing_at.get(frame.room_id, -1e9) < self.settings.typing_interval_seconds:
            return  # typing is a hint: extra ones are dropped, not refused
        self._typing_at[frame.room_id] = now
        await self.context.broker.publish(
            [protocol.envelope_of(protocol.typing_event(frame.room_id, self.user))]
        )


def _echo(text: str) -> dict[str, Any]:
    """The client_id of a refused frame, so the client knows which send failed."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    client_id = raw.get("client_id") if isinstance(raw, dict) else None
    return {"client_id": client_id} if isinstance(client_id, str) else {}


def _failure_frame(error: Exception, where: str, **echo: Any) -> str:
    """The error frame for a frame that failed unexpectedly: an outage says which, with
    when to retry, and is logged once per interval; anything else is a logged bug."""
    outage = classify(error)
    if outage is None:
        log.exception("could not handle a frame (%s)", where)
        return protocol.error_frame(
            "unavailable", "the server could not do this now; try again", **echo
        )
    outages.seen(outage, error, where)
    return protocol.error_frame(outage.code, outage.message, retry_after=outage.retry_after, **echo)


def _log_slow_client(conn: Connection) -> None:
    log.warning(
        "closing a slow client (1013): %s, %d events queued",
        "its queue overflowed" if conn.overflowed else "its socket took nothing in time",
        conn.queue.qsize(),
        extra={
            "event.action": "websocket.slow_client",
            "event.reason": "queue_overflow" if conn.overflowed else "write_timeout",
        },
    )
