"""Opening a WebSocket: the origin check, the auth frame and what ``ready`` needs (contract.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from cmschat.accounts import auth, sessions
from cmschat.chat import listing
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS, set_actor, user_actor
from cmschat.errors import CmschatError
from cmschat.realtime import protocol
from cmschat.websocket import frames

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008


def origin_allowed(websocket: WebSocket, context: AppContext) -> bool:
    """Whether a browser's Origin may open a socket (no Origin: not a browser)."""
    origin = websocket.headers.get("origin")
    if origin is None:  # not a browser: nothing for CSRF-style abuse to ride on
        return True
    if origin.rstrip("/") in context.settings.cors_origins:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


async def authenticate(
    websocket: WebSocket, context: AppContext
) -> tuple[auth.SignedIn | None, dict[str, int]]:
    """Read and check the auth frame; on failure close 1008 and return no session."""
    settings = context.settings.realtime
    try:
        text = await asyncio.wait_for(
            websocket.receive_text(), timeout=settings.auth_timeout_seconds
        )
        if protocol.too_deep(text):
            log_too_deep()
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


async def read_opening(
    context: AppContext, *, user_id: int, username: str, token_id: int
) -> tuple[str | None, dict[int, int], tuple[int, ...]]:
    """Read once the connection is known to the hub: why the session has ended meanwhile
    (None: it has not), the user's rooms with their last seq, their contacts."""
    async with context.db.unit_of_work(user_actor(user_id), actor_name=username) as session:
        state = (
            await sessions.check_sessions(
                session, token_ids=[token_id], policy=context.settings.auth, now=context.clock.now()
            )
        )[token_id]
        rooms = await listing.room_positions(session, user_id=user_id)
        contacts = await listing.contacts_of(session, user_id=user_id)
    return state.ended, rooms, contacts


def log_too_deep() -> None:
    """Log a refused, too deeply nested frame."""
    log.warning(
        "refused a WebSocket frame nested deeper than %d levels",
        protocol.MAX_NESTING,
        extra={"event.action": "ws.frame_refused", "event.reason": "too_deep"},
    )
