"""What a signed-in WebSocket client's frames do: send, read markers, typing, pings.

Each action is a thin transport call, like an HTTP route: one unit of work, one service
call, an answer frame. Events leave through the unit of work once it has committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts import sessions
from cmschat.accounts.models import User
from cmschat.audit import service as audit
from cmschat.chat.messages import commands
from cmschat.chat.messages.group_commit import SendWithdrawn, sender_origin
from cmschat.context import AppContext
from cmschat.db.actors import user_actor
from cmschat.errors import CmschatError
from cmschat.observability.outages import classify, outages
from cmschat.realtime import protocol, signals
from cmschat.realtime.connections import Connection
from cmschat.realtime.delivery import ConnectionOver
from cmschat.websocket import frames
from cmschat.websocket.caller import Caller
from cmschat.websocket.fast_send import SEND, SendDraft, parse_send

log = logging.getLogger(__name__)

PONG = protocol.dumps({"type": "pong"})


class FrameActions:
    """Acts on one connection's frames, one at a time, in the order they came."""

    _still_wanted: Callable[[], bool]
    """A send is withdrawn when the session ended before its write (revoked meanwhile:
    the message must not be stored); made with ``_sender``, at the first send."""

    def __init__(
        self, context: AppContext, user: Caller, conn: Connection, reply: Callable[[str], None]
    ) -> None:
        self.context = context
        self.user = user
        self.conn = conn
        self.reply = reply
        self._typing_at: dict[int, float] = {}
        self._sender: User | None = None
        """The transient ``User`` the send service takes, made at this connection's first
        send (a connection that never sends holds none; building one per send was ~3 % of
        a send's CPU)."""
        self._origin: audit.Origin | None = None
        """Who this connection's sends' audit events name, and its request context (its
        address and request id, set once for the connection by the gateway): taken at its
        first send, not per send."""
        self._refresh_every: timedelta | None = None
        """``sessions.refresh_interval``, worked out at the first frame (per frame it was
        2 % of the server's CPU under load)."""

    async def handle(self, text: str) -> None:
        """Act on one frame's text; every failure becomes an error frame."""
        if self.conn.ended:
            return  # the session ended: frames still queued are not acted on
        draft = parse_send(text)
        if draft is not None:
            await self._act(draft, text, SEND)
            return
        try:
            frame = frames.ACTION.validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"][1:]) or "frame"
            self.reply(
                protocol.error_frame("invalid", f"{where}: {first['msg']}", **frames.echo(text))
            )
            return
        await self._act(frame, text, frame.type)

    async def _act(
        self,
        frame: SendDraft | frames.ActionFrame,
        text: str,
        kind: str,
    ) -> None:
        if not isinstance(frame, frames.PingFrame):
            await self._note_activity()
        try:
            if isinstance(frame, frames.PingFrame):
                self.reply(PONG)
            elif isinstance(frame, SendDraft | frames.SendFrame):
                await self._send_message(frame)
            elif isinstance(frame, frames.ReadFrame):
                await self._mark_read(frame)
            else:
                await self._typing(frame)
        except CmschatError as exc:
            self.reply(
                protocol.error_frame(
                    exc.code, exc.message, **protocol.details(exc), **frames.echo(text)
                )
            )
        except (ConnectionOver, SendWithdrawn):
            pass  # not stored; the connection is closing with the session's code
        except Exception as error:
            self.reply(_failure_frame(error, f"websocket {kind}", **frames.echo(text)))

    def _unit_of_work(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self.context.db.unit_of_work(user_actor(self.user.id), actor_name=self.user.username)

    async def _send_message(self, frame: SendDraft | frames.SendFrame) -> None:
        if self._sender is None:
            self._sender = self.user.as_user()
            self._origin = sender_origin(self._sender)
            conn = self.conn
            self._still_wanted = lambda: not conn.ended
        async with self.context.admission.sends("websocket"):
            view, _created = await self.context.sends.send(
                user=self._sender,
                room_id=frame.room_id,
                draft=frame,
                still_wanted=self._still_wanted,
                origin=self._origin,
            )
        # The message's JSON as the room event carries it, not serialised again; the ack
        # put together as text, as protocol.dumps would write it.
        # A client_id is of [A-Za-z0-9._:-] only (validated): nothing in it to escape.
        client_id = "null" if frame.client_id is None else f'"{frame.client_id}"'
        self.reply(f'{{"type":"ack","client_id":{client_id},"message":{view.json.decode()}}}')

    async def _note_activity(self) -> None:
        """Real use (sends, reads, typing; not pings) keeps the session alive, as HTTP does."""
        now = self.context.clock.now()
        policy = self.context.settings.auth
        if self._refresh_every is None:
            self._refresh_every = sessions.refresh_interval(policy)
        seen = self.conn.last_used_at
        if seen is not None and now - seen < self._refresh_every:
            return
        assert self.conn.token_id is not None  # noqa: S101 - set from the signed-in token
        try:
            async with self._unit_of_work() as session:
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

    async def _mark_read(self, frame: frames.ReadFrame) -> None:
        async with self._unit_of_work() as session:
            await commands.mark_read(
                session,
                user=self.user.as_user(),
                room_id=frame.room_id,
                message_id=frame.message_id,
            )

    async def _typing(self, frame: frames.TypingFrame) -> None:
        if frame.room_id not in self.conn.rooms:
            raise CmschatError("no such room", code="not_found")
        now = time.monotonic()
        interval = self.context.settings.realtime.typing_interval_seconds
        if now - self._typing_at.get(frame.room_id, -1e9) < interval:
            return  # typing is a hint: extra ones are dropped, not refused
        self._typing_at[frame.room_id] = now
        await signals.send_typing(
            self.context.broker,
            room_id=frame.room_id,
            user_id=self.user.id,
            display_name=self.user.display_name,
        )


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
