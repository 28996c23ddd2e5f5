"""The WebSocket protocol's frames: what clients may send, and how events are serialised.

Events are serialised once per event (not per recipient) into the exact text frame every
recipient gets.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from cmschat.chat.events import Published
from cmschat.chat.schemas import AttachmentIds, ClientId
from cmschat.errors import CmschatError, RateLimited
from cmschat.jsonshape import shape_problem
from cmschat.realtime.broker import Envelope

RoomId = Annotated[int, Field(ge=1, le=2**63 - 1)]
MAX_NESTING = 8
"""Arrays/objects inside each other in a client frame; real frames need 2."""


class ClientFrame(BaseModel):
    """Common to every client frame: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class AuthFrame(ClientFrame):
    """The first frame: the bearer token and, per room, the last seq the client has."""

    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=256)
    resume: dict[str, Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field(
        default_factory=dict, max_length=10_000
    )


class SendFrame(ClientFrame):
    """``message.send``: like POST /rooms/{id}/messages."""

    type: Literal["message.send"]
    room_id: RoomId
    content: str = Field(default="", max_length=100_000)
    client_id: ClientId | None = None
    reply_to: RoomId | None = None
    attachment_ids: AttachmentIds = Field(default_factory=list)


class TypingFrame(ClientFrame):
    """The user is typing in a room (not stored)."""

    type: Literal["typing"]
    room_id: RoomId


class ReadFrame(ClientFrame):
    """Move the read marker, like POST /rooms/{id}/read."""

    type: Literal["read"]
    room_id: RoomId
    message_id: RoomId


class PingFrame(ClientFrame):
    """Keep-alive; answered with ``pong``."""

    type: Literal["ping"]


ActionFrame = Annotated[
    SendFrame | TypingFrame | ReadFrame | PingFrame, Field(discriminator="type")
]
ACTION = TypeAdapter(ActionFrame)
AUTH = TypeAdapter(AuthFrame)


def too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether JSON text nests deeper than ``limit``: checked before any (recursive) parse."""
    return shape_problem(text, max_depth=limit) is not None


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON text for a frame."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def error_frame(code: str, message: str, **extra: Any) -> str:
    """An error answer; the connection stays open."""
    return dumps({"type": "error", "code": code, "message": message, **extra})


def details(exc: CmschatError) -> dict[str, Any]:
    """Fields an error frame carries besides its code and message (a rate limit's wait)."""
    return {"retry_after": exc.retry_after} if isinstance(exc, RateLimited) else {}


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


def typing_event(room_id: int, user: Any) -> Published:
    """``typing``: not stored, not sequenced, may be lost."""
    return Published(
        room_id=room_id,
        seq=None,
        type="typing",
        payload={"user": {"id": user.id, "display_name": user.display_name}},
    )
