"""The WebSocket protocol's server side: how events and answers become text frames.

Events are serialised once per event (not per recipient) into the exact text frame every
recipient gets. What clients may send is the transport's (cmschat/websocket/frames.py).
"""

from __future__ import annotations

from typing import Any

from cmschat import jsonbytes
from cmschat.errors import CmschatError, Overloaded, RateLimited
from cmschat.events import Published
from cmschat.jsonshape import shape_problem
from cmschat.realtime.broker import Envelope

MAX_NESTING = 8
"""Arrays/objects inside each other in a client frame; real frames need 2."""


def too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether JSON text nests deeper than ``limit``: checked before any (recursive) parse."""
    return shape_problem(text, max_depth=limit) is not None


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON text for a frame (datetimes as the HTTP answers write them)."""
    return jsonbytes.dumps_text(frame)


def error_frame(code: str, message: str, **extra: Any) -> str:
    """An error answer; the connection stays open."""
    return dumps({"type": "error", "code": code, "message": message, **extra})


def details(exc: CmschatError) -> dict[str, Any]:
    """Fields an error frame carries besides its code and message (a rate limit's wait)."""
    return {"retry_after": exc.retry_after} if isinstance(exc, RateLimited | Overloaded) else {}


def envelope_of(event: Published) -> Envelope:
    """Serialise an event once, into the frame every recipient gets."""
    body: dict[str, Any] = {"type": event.type}
    if event.room_id:  # 0: for everyone, not a room's event
        body["room_id"] = event.room_id
    if event.seq is not None:
        body["seq"] = event.seq
    body.update(event.payload)
    return Envelope(
        room_id=event.room_id,
        seq=event.seq,
        type=event.type,
        frame=dumps(body),
        user_id=event.user_id,
        only_user_ids=event.only_user_ids,
    )


def direct(frame: str) -> Envelope:
    """A frame for one connection only (acks, errors, pongs): no room, no seq."""
    return Envelope(room_id=0, seq=None, type="_direct", frame=frame)


def typing_event(room_id: int, *, user_id: int, display_name: str) -> Published:
    """``typing``: not stored, not sequenced, may be lost."""
    return Published(
        room_id=room_id,
        seq=None,
        type="typing",
        payload={"user": {"id": user_id, "display_name": display_name}},
    )
