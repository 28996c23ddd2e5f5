"""Refusing a frame past a limit for a small share of what acting on it costs.

Under overload most frames a server reads are refused; if a refusal costs a fifth of an
accepted send (parsed by pydantic, validated, answered with a freshly serialised frame),
five times the capacity offered fills the core with refusals and the accepted sends
nearly stop (docs/performance.md, "Overload: the system test"). So a frame to refuse is
recognised from one C-speed parse, without validation, and answered with ``busy`` text
built once: only its ``client_id`` differs from one refusal to the next.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import orjson

from cmschat.realtime import protocol

SEND: Final = "message.send"

PROCESS_FULL = "the server is busy; send again in a moment"
CONNECTION_FULL = "too many frames in flight; send again after the acks arrive"


def peek(text: str) -> tuple[bool, str | None]:
    """Whether a frame is a ``message.send``, and the ``client_id`` it carries (a string).

    Only the type is checked: a send that validation would refuse is refused ``busy`` all
    the same, as it was not going to be stored now either way.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False, None
    if type(frame) is not dict:
        return False, None
    client_id = frame.get("client_id")
    return frame.get("type") == SEND, client_id if type(client_id) is str else None


@cache
def busy(message: str, retry_after: int) -> BusyFrames:
    """The ``busy`` frames for one reason, shared by every connection of the process."""
    return BusyFrames(message, retry_after)


class BusyFrames:
    """The ``busy`` error frame, built once per reason, completed per refusal."""

    __slots__ = ("_closed", "_open")

    def __init__(self, message: str, retry_after: int) -> None:
        whole = protocol.error_frame("busy", message, retry_after=retry_after)
        self._closed = whole
        self._open = whole[:-1] + ',"client_id":'

    def frame(self, client_id: str | None) -> str:
        """The frame ``protocol.error_frame`` would build, with the frame's ``client_id``."""
        if client_id is None:
            return self._closed
        return self._open + orjson.dumps(client_id).decode() + "}"
