"""A cheap WebSocket client for load generators: frames read in ``data_received``, handed
to a callback as bytes, no task, queue or future per frame.

The ``websockets`` library's asyncio client cost ~19 µs of the generator's CPU per frame
(its frame parser, assembler, queue and a wake-up of the reading task each), so at 3,000
sends a second with ten deliveries each the generator took 65-75 % of a core on a
two-core machine and the server's threads waited 12-17 % of their time for a core
(``docs/performance.md``, "A cheaper WebSocket load generator"). Here a frame costs its
header's few byte reads and a slice.

Only what cmschat's server does is handled: unfragmented, unmasked text frames, pings (a
pong goes back), a close. Client frames are masked with a random key, as RFC 6455 asks.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from websockets.speedups import apply_mask

OnText = Callable[[bytes], None]
"""Called with each text frame's payload (UTF-8 bytes), in order."""

_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA
_FIN = 0x80
_MASKED = 0x80


def _frame(opcode: int, payload: bytes) -> bytes:
    """A whole masked client frame."""
    length = len(payload)
    if length <= 125:
        header = bytes((_FIN | opcode, _MASKED | length))
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", _FIN | opcode, _MASKED | 126, length)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, _MASKED | 127, length)
    mask = random.randbytes(4)
    return header + mask + apply_mask(payload, mask)


class RawWebSocket(asyncio.Protocol):
    """One client connection: ``connect`` opens it, ``send_text`` writes, ``close`` ends."""

    def __init__(self, host: str, path: str, on_text: OnText) -> None:
        self._on_text = on_text
        key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False
        """Set by ``close``: the end was this side's."""
        self.close_code: int | None = None
        """The code of the server's close frame (1005: it carried none); None: none came."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            status = buffer[: buffer.find(b"\r\n")]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                self.abort()
                return
            self.opened.set_result(None)
            buffer = buffer[end + 4 :]
        self._buffer = self._read_frames(buffer)

    def _read_frames(self, buffer: bytes) -> bytes:
        """Hand on every whole frame in ``buffer``; what is left of it (a partial frame)."""
        size = len(buffer)
        at = 0
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 4]), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 10]), 10
            end = at + head + length
            if end > size:
                break
            if second & _MASKED or not first & _FIN:
                raise ConnectionError("a masked or fragmented server frame")
            opcode = first & 0x0F
            payload = buffer[at + head : end]
            at = end
            if opcode == _TEXT:
                self._on_text(payload)
            elif opcode == _PING:
                self._write(_frame(_PONG, payload))
            elif opcode == _CLOSE:
                self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
                self._write(_frame(_CLOSE, payload[:2]))
                if self._transport is not None:
                    self._transport.close()
        return buffer[at:]

    @property
    def ended_by_server(self) -> bool:
        """Whether the connection is over and this side did not end it."""
        return self.closed.done() and not self.closing

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def send_text(self, text: str) -> None:
        """Write one text frame (buffered by the transport if the socket is full)."""
        self._write(_frame(_TEXT, text.encode()))

    def close(self) -> None:
        """Send a normal close and drop the connection."""
        self.closing = True
        self._write(_frame(_CLOSE, struct.pack("!H", 1000)))
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()


async def connect(url: str, on_text: OnText) -> RawWebSocket:
    """An open connection to ``ws://host:port/path``; ``on_text`` gets its text frames."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(
        lambda: RawWebSocket(f"{host}:{port}", parts.path or "/", on_text), host, port
    )
    await protocol.opened
    return protocol
