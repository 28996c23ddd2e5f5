"""What WebSocket clients may send: the auth frame, then actions (see contract.md)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from cmschat.chat.schemas import AttachmentIds, ClientId
from cmschat.jsonbytes import is_text

RoomId = Annotated[int, Field(ge=1, le=2**63 - 1)]


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


def echo(text: str) -> dict[str, Any]:
    """The client_id of a refused frame, so the client knows which send failed."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    client_id = raw.get("client_id") if isinstance(raw, dict) else None
    # An escaped lone surrogate is valid JSON but cannot be written back.
    return {"client_id": client_id} if isinstance(client_id, str) and is_text(client_id) else {}


_CLIENT_ID_KEY = re.compile(r'"client_id"\s*:\s*"([A-Za-z0-9._:-]{1,64})"')


def echo_unparsed(text: str) -> dict[str, Any]:
    """The client_id of a frame refused unparsed (too large), found by its key: a quote
    inside a JSON string is escaped, so ``"client_id":`` matches only a key, and a
    client_id's characters need no escaping."""
    found = _CLIENT_ID_KEY.search(text)
    return {"client_id": found[1]} if found else {}


PING_FRAME = '{"type":"ping"}'


def is_ping(text: str) -> bool:
    """Whether a frame is the app's keep-alive ``ping``, however it is spaced: answered in
    the reading task, never queued behind sends (nor refused as ``busy``)."""
    return len(text) <= 64 and "".join(text.split()) == PING_FRAME
