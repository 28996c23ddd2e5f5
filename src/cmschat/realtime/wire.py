"""A text frame as it goes on the wire: built once per event, written to every socket.

A server's WebSocket frames are not masked, and cmschat negotiates no extension
(permessage-deflate is off: docs/performance.md, section 1), so a text frame's bytes are
the same for every connection it goes to. Building them once per event, and handing them
straight to a connection's transport when it takes writes at once, spares each delivery
the ASGI send chain and wsproto's framing (docs/performance.md, "Issue 16, third round").
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, overload

SCOPE_KEY = "cmschat.write_frame"
"""Where the server's protocol puts its ``WriteFrame`` in a WebSocket's ASGI scope."""

WriteFrame = Callable[[bytes], bool]
"""Writes a whole frame now and says True, or says False (then send it the ASGI way)."""

_FIN_TEXT = 0x81
_SHORT = 125
_TWO_BYTE = 0xFFFF


def text_frame(text: str) -> bytes:
    """The bytes of one unmasked, unfragmented text frame carrying ``text`` (RFC 6455 5.2)."""
    payload = text.encode()
    length = len(payload)
    if length <= _SHORT:
        header = bytes((_FIN_TEXT, length))
    elif length <= _TWO_BYTE:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload


class FrameBytes:
    """A text frame's bytes as a lazy attribute (``Envelope.wire``): built at the first
    read and kept in the instance's ``__dict__``, where every later read finds it before
    this descriptor. ``functools.cached_property`` does the same under a lock (Python
    3.11), two frames a send; an envelope is only read on the event loop's thread."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, framed: None, owner: type) -> FrameBytes: ...
    @overload
    def __get__(self, framed: Any, owner: type) -> bytes: ...
    def __get__(self, framed: Any, owner: type) -> FrameBytes | bytes:
        if framed is None:
            return self
        data: bytes = text_frame(framed.frame)
        framed.__dict__[self.name] = data
        return data
