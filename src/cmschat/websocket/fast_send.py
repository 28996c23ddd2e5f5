"""``message.send``, the one frame clients send all the time, read without pydantic.

Validating a send through ``frames.ACTION`` (the discriminated union, a model instance)
was most of a client frame's cost (docs/performance.md, "Where the server's CPU goes").
This parser takes only frames that are plainly valid sends, each field of exactly the
JSON type the model wants and within its limits, and answers None for anything else,
which then goes to the model as before: what the model would refuse (and the error frame
it makes), and what it would accept only by coercion (``1.0`` for an int, say), never
passes here. tests/websocket/test_fast_send.py holds it to the model's answers.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple, TypeGuard

import orjson

SEND: Final = "message.send"
_MAX_ID: Final = 2**63 - 1
_MAX_CONTENT: Final = 100_000
_MAX_ATTACHMENTS: Final = 10
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_FIELDS: Final = frozenset(
    ("type", "room_id", "content", "client_id", "reply_to", "attachment_ids")
)


class SendDraft(NamedTuple):
    """A valid ``message.send``: the fields ``frames.SendFrame`` would hold."""

    room_id: int
    content: str
    client_id: str | None
    reply_to: int | None
    attachment_ids: list[int]


def _is_id(value: object) -> TypeGuard[int]:
    # ``type is int``: a bool is an int to isinstance, and the model refuses it.
    return type(value) is int and 1 <= value <= _MAX_ID


def _is_client_id(value: object) -> TypeGuard[str]:
    return type(value) is str and _CLIENT_ID.fullmatch(value) is not None


def _are_ids(value: object) -> TypeGuard[list[int]]:
    if type(value) is not list:
        return False
    return not value or (len(value) <= _MAX_ATTACHMENTS and all(map(_is_id, value)))


def parse_send(text: str) -> SendDraft | None:
    """The send a frame's text holds, or None when it is anything but a plainly valid
    ``message.send`` (the model then decides, and words any refusal)."""
    try:
        frame: object = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(frame) is not dict or frame.get("type") != SEND or not _FIELDS.issuperset(frame):
        return None
    room_id = frame.get("room_id")
    content = frame.get("content", "")
    client_id = frame.get("client_id")
    reply_to = frame.get("reply_to")
    attachment_ids = frame.get("attachment_ids", [])
    if (
        _is_id(room_id)
        and type(content) is str
        and len(content) <= _MAX_CONTENT
        and (client_id is None or _is_client_id(client_id))
        and (reply_to is None or _is_id(reply_to))
        and _are_ids(attachment_ids)
    ):
        return SendDraft(room_id, content, client_id, reply_to, attachment_ids)
    return None
