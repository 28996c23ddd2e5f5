"""A short cut for what clients send most: whole, masked, single-frame text messages.

wsproto parses every frame through a generator, a growing buffer, a header tuple, an
incremental UTF-8 decoder and two frame tuples, and uvicorn then copies the text through a
``StringIO``; with sends in flight that was about an eighth of a durable send
(docs/performance.md, "A durable send split by whose code runs it"). When wsproto is between
frames and holds nothing, the frames at the start of the received bytes that need none of
that machinery are read here; the first one that does (a partial, control, fragmented,
binary, unmasked, oversize or reserved-bit frame, a long length in a longer encoding than
needed, bad UTF-8) and everything after it go to wsproto from exactly that byte, so every
error and close code stays wsproto's and uvicorn's.
"""

from __future__ import annotations

from inspect import GEN_CLOSED, getgeneratorstate

from wsproto.connection import Connection, ConnectionState

# FIN, no reserved bits, opcode 1 (text): the first byte of a whole unextended text frame.
_WHOLE_TEXT = 0x81
_MASKED = 0x80


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XORed with the repeated 4-byte ``mask`` (RFC 6455, 5.3).

    One XOR of two big integers: for a chat message's 20 to 2,000 bytes this takes a half
    to a fifth of the time of wsproto's four strided ``translate`` calls (docs/performance.md).
    """
    size = len(payload)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(size)


def read_text_frames(data: bytes, max_size: int) -> tuple[list[str], int]:
    """The texts of the whole masked text frames at the start of ``data``, and the offset
    of the first byte not read (the first frame this does not take, or ``len(data)``)."""
    texts: list[str] = []
    pos = 0
    end = len(data)
    while end - pos >= 6 and data[pos] == _WHOLE_TEXT:
        second = data[pos + 1]
        if not second & _MASKED:
            break
        size = second & 0x7F
        head = pos + 2
        if size == 126:
            size = int.from_bytes(data[head : head + 2])
            head += 2
            if size < 126:  # wsproto refuses a longer encoding than needed (1002)
                break
        elif size == 127:
            size = int.from_bytes(data[head : head + 8])
            head += 8
            if size <= 0xFFFF:
                break
        start = head + 4
        stop = start + size
        if size > max_size or stop > end:
            break
        try:
            texts.append(unmask(data[start:stop], data[head:start]).decode())
        except UnicodeDecodeError:
            break
        pos = stop
    return texts, pos


def between_frames(conn: object) -> bool:
    """Whether ``conn`` is an established, unextended wsproto connection that is open and
    holds no bytes, no frame or message in progress and no pending event, so that the next
    byte it would read starts a new message."""
    if type(conn) is not Connection or conn.state is not ConnectionState.OPEN:
        return False
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        not conn._events
        and not proto.extensions
        and not decoder.buffer.buffer
        and decoder.header is None
        and proto._message_decoder.opcode is None
        # A parse failure ends wsproto's frame generator without changing the state.
        and getgeneratorstate(proto._parse_more) != GEN_CLOSED
    )
