"""The short cut for clients' whole masked text frames changes nothing a peer or the app sees.

Each test drives the server's protocol with a fake transport and the bytes a client would
send, and records, in order, what the transport is told (writes, pause, resume, close) and
the events the app receives. The protocol with the short cut must record exactly what the
same protocol with uvicorn's plain ``data_received`` (everything through wsproto) records,
for every way the bytes can be cut into reads.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from uvicorn.server import ServerState
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

from cmschat.realtime import client_frames
from cmschat.realtime.transport import AbortingWSProtocol

LIMIT = 70_000  # above 65,535 so that a frame at the limit uses the 8-byte length
TIMEOUT = 5.0


class PlainWSProtocol(AbortingWSProtocol):
    """The reference: every byte through wsproto, as uvicorn does."""

    data_received = WSProtocol.data_received


class FakeTransport(asyncio.Transport):
    """Records what the protocol asks of its socket."""

    def __init__(self, log: list[Any]) -> None:
        super().__init__()
        self.log = log
        self.closing = False

    def write(self, data: Any) -> None:
        self.log.append(("write", bytes(data)))

    def pause_reading(self) -> None:
        self.log.append(("pause",))

    def resume_reading(self) -> None:
        self.log.append(("resume",))

    def close(self) -> None:
        self.log.append(("close",))
        self.closing = True

    def abort(self) -> None:
        self.log.append(("abort",))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )


def frame(
    payload: bytes | str,
    *,
    opcode: int = 1,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    length_bytes: int | None = None,
) -> bytes:
    """A client frame, built by hand so that it can break the rules on purpose."""
    data = payload.encode() if isinstance(payload, str) else payload
    size = len(data)
    if length_bytes is None:
        length_bytes = 0 if size <= 125 else 2 if size <= 0xFFFF else 8
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    masked = 0x80 if mask is not None else 0
    if length_bytes == 0:
        head += bytes([masked | size])
    elif length_bytes == 2:
        head += bytes([masked | 126]) + struct.pack("!H", size)
    else:
        head += bytes([masked | 127]) + struct.pack("!Q", size)
    if mask is None:
        return head + data
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def open_protocol(
    cls: type[AbortingWSProtocol], log: list[Any], release: asyncio.Event
) -> AbortingWSProtocol:
    """A protocol of class ``cls`` past the handshake, its app holding the connection open
    until ``release`` is set."""
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        accepted.set()
        await release.wait()

    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="off",
        ws_max_size=LIMIT,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
    )
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(FakeTransport(log))
    client = WSConnection(ConnectionType.CLIENT)
    protocol.data_received(client.send(Request(host="chat.test", target="/api/v1/ws")))
    await asyncio.wait_for(accepted.wait(), TIMEOUT)
    log.clear()
    return protocol


async def run(cls: type[AbortingWSProtocol], reads: list[bytes]) -> list[Any]:
    """What the transport and the app see when the client's bytes arrive as ``reads``; the
    app takes every event after each read (which resumes reading, as uvicorn does)."""
    log: list[Any] = []
    release = asyncio.Event()
    protocol = await open_protocol(cls, log, release)
    try:
        for data in reads:
            if protocol.transport.is_closing():
                break
            protocol.data_received(data)
            while not protocol.queue.empty():
                log.append(await asyncio.wait_for(protocol.receive(), TIMEOUT))
        return list(log)
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), TIMEOUT)


def cuts(stream: bytes, offsets: list[int]) -> list[list[bytes]]:
    """``stream`` cut in two at each of ``offsets``."""
    return [[stream[:at], stream[at:]] for at in offsets]


async def assert_same(reads: list[bytes]) -> list[Any]:
    """The short cut's record equals the reference's; returns it."""
    fast = await run(AbortingWSProtocol, reads)
    plain = await run(PlainWSProtocol, reads)
    assert fast == plain
    return fast


def texts(log: list[Any]) -> list[str]:
    return [e["text"] for e in log if isinstance(e, dict) and "text" in e]


def writes(log: list[Any]) -> list[bytes]:
    return [e[1] for e in log if isinstance(e, tuple) and e[0] == "write"]


def close_code(data: bytes) -> int:
    """The code of the unmasked close frame ``data`` (the server's)."""
    assert data[0] == 0x88 and data[1] < 126
    code: int = struct.unpack("!H", data[2:4])[0]
    return code


def disconnect(log: list[Any]) -> dict[str, Any]:
    (event,) = [e for e in log if isinstance(e, dict) and e["type"] == "websocket.disconnect"]
    return event


SMALL = ["", "hello", "ü€😀" * 10, "x" * 125, "y" * 126, "z" * 300]
# Masks of small bytes too, so that a wrong unmask of ASCII still decodes (to the wrong text).
SMALL_STREAM = b"".join(
    frame(t, mask=bytes([i, 0x5A, 0xA5, i * 7 % 256] if i % 2 else [i, 2, 3, 4]))
    for i, t in enumerate(SMALL, 1)
)


async def test_a_stream_cut_at_every_byte_gives_the_same_messages_in_order() -> None:
    expected = await run(AbortingWSProtocol, [SMALL_STREAM])
    assert texts(expected) == SMALL
    for reads in cuts(SMALL_STREAM, list(range(1, len(SMALL_STREAM)))):
        assert texts(await assert_same(reads)) == SMALL
    assert texts(await assert_same([bytes([b]) for b in SMALL_STREAM])) == SMALL


async def test_long_lengths_and_a_frame_exactly_at_the_limit() -> None:
    payloads = ["a" * 65_535, "b" * 65_536, "é" * (LIMIT // 2), "c" * 200]
    frames = [frame(p) for p in payloads]
    stream = b"".join(frames)
    assert stream[1] & 0x7F == 126 and frames[1][1] & 0x7F == 127
    assert frames[2][1] & 0x7F == 127 and len("é" * (LIMIT // 2)) * 2 == LIMIT
    assert texts(await assert_same([stream])) == payloads
    boundaries = [sum(map(len, frames[:i])) for i in range(len(frames))]
    offsets = sorted({b + d for b in boundaries for d in range(1, 16)} | {len(stream) - 1})
    for reads in cuts(stream, offsets):
        assert texts(await assert_same(reads)) == payloads


async def test_pings_and_pongs_between_and_inside_bursts_are_answered() -> None:
    stream = (
        frame("one")
        + frame(b"p1", opcode=9)
        + frame("two")
        + frame("three")
        + frame(b"unasked", opcode=10)
        + frame("four")
        + frame(b"p2", opcode=9)
    )
    whole = await assert_same([stream])
    assert texts(whole) == ["one", "two", "three", "four"]
    assert writes(whole) == [b"\x8a\x02p1", b"\x8a\x02p2"]
    for reads in cuts(stream, list(range(1, len(stream)))):
        log = await assert_same(reads)
        assert texts(log) == texts(whole)
        assert writes(log) == writes(whole)


async def test_only_whole_text_frames_skip_wsproto(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    original = WSProtocol.data_received
    monkeypatch.setattr(
        WSProtocol, "data_received", lambda self, data: (seen.append(data), original(self, data))
    )
    assert texts(await run(AbortingWSProtocol, [SMALL_STREAM])) == SMALL
    assert [data[:4] for data in seen] == [b"GET "]  # the handshake, and nothing after it
    seen.clear()
    rest = frame(b"p", opcode=9) + frame("after")
    assert texts(await run(AbortingWSProtocol, [frame("before") + rest])) == ["before", "after"]
    assert seen[1:] == [rest]


# A rule broken after a good frame in the same read, and a good frame after it that must
# not be delivered unless the reference delivers it too.
BROKEN = {
    "fragmented": (frame("frag", fin=False) + frame("ment", opcode=0), None),
    "binary": (frame(b"\x00\xff", opcode=2), None),
    "unmasked": (frame("unmasked text", mask=None), 1002),
    "continuation without a start": (frame("stray", opcode=0), 1002),
    "bad utf-8": (frame(b"ok \xc3\x28"), 1007),
    "truncated utf-8": (frame(b"\xe2\x82"), 1007),
    # What a lenient decoder (``surrogatepass``, a hand-rolled one) would let through.
    "a surrogate": (frame(b"\xed\xa0\x80"), 1007),
    "overlong": (frame(b"\xc0\xaf"), 1007),
    "above U+10FFFF": (frame(b"\xf4\x90\x80\x80"), 1007),
    "utf-8 split across fragments": (
        frame(b"\xe2\x82", fin=False) + frame(b"\xac", opcode=0),
        None,
    ),
    "a surrogate split across fragments": (
        frame(b"\xed", fin=False) + frame(b"\xa0\x80", opcode=0),
        1007,
    ),
    "oversize": (frame("o" * (LIMIT + 1)), 1009),
    "rsv1": (frame("deflated?", rsv=4), 1002),
    "rsv3": (frame("x", rsv=1), 1002),
    "2-byte length for 5 bytes": (frame("short", length_bytes=2), 1002),
    "8-byte length for 300 bytes": (frame("s" * 300, length_bytes=8), 1002),
    "close": (frame(struct.pack("!H", 1000) + b"bye", opcode=8), 1000),
    "bad opcode": (frame("?", opcode=3), 1002),
}


@pytest.mark.parametrize("name", list(BROKEN))
async def test_everything_else_behaves_as_wsproto_alone(name: str) -> None:
    data, code = BROKEN[name]
    stream = frame("before") + data + frame("after")
    whole = await assert_same([stream])
    assert texts(whole)[:1] == ["before"]
    if code is None:
        assert len([e for e in whole if isinstance(e, dict)]) == 3
    else:
        assert disconnect(whole)["code"] == code
        assert "after" not in texts(whole)
        # The client is told why (RFC 6455 7.1.7), not left to see 1006.
        assert close_code(writes(whole)[-1]) == code
    start = len(frame("before"))
    offsets = [*range(1, start + 16), len(stream) - 1]
    for reads in cuts(stream, offsets):
        await assert_same(reads)


def test_unmask_matches_wsproto() -> None:
    from wsproto.frame_protocol import XorMaskerSimple

    for size in (0, 1, 3, 4, 5, 127, 1000):
        payload = bytes(range(256)) * 4
        assert client_frames.unmask(payload[:size], b"\x01\x80\xfe\x7f") == bytes(
            XorMaskerSimple(b"\x01\x80\xfe\x7f").process(bytearray(payload[:size]))
        )


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_reader_stops_at_the_first_frame_it_does_not_take(name: str) -> None:
    data, _ = BROKEN[name]
    assert client_frames.read_text_frames(data + frame("after"), LIMIT) == ([], 0)
    assert client_frames.read_text_frames(data + bytes(16), LIMIT) == ([], 0)
    before = frame("before")
    assert client_frames.read_text_frames(before + data, LIMIT) == (["before"], len(before))


async def test_wsproto_keeps_what_it_started() -> None:
    """Once wsproto holds part of a frame or of a message, it reads on until it is done."""
    log: list[Any] = []
    release = asyncio.Event()
    protocol = await open_protocol(AbortingWSProtocol, log, release)
    try:
        assert client_frames.between_frames(protocol.conn)
        first, second = frame("x" * 200, fin=False), frame("end", opcode=0)
        # Inside the header, the mask, just before and inside the payload.
        for cut in (1, 3, 6, 8, 9, len(first) - 1):
            protocol.data_received(first[:cut])
            assert not client_frames.between_frames(protocol.conn)
            protocol.data_received(first[cut:])
            assert not client_frames.between_frames(protocol.conn)  # the message goes on
            protocol.data_received(second)
            assert client_frames.between_frames(protocol.conn)
            assert (await protocol.receive())["text"] == "x" * 200 + "end"
        # A parse failure that leaves wsproto holding nothing, its state still OPEN.
        protocol.data_received(frame("stray", opcode=0))
        assert not client_frames.between_frames(protocol.conn)
        assert disconnect([await protocol.receive()])["code"] == 1002
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), TIMEOUT)


@pytest.mark.parametrize(
    ("bad", "code"),
    [(frame("stray", opcode=0), 1002), (frame(b"\xc3\x28"), 1007)],
    ids=["1002", "1007"],
)
async def test_a_malformed_frame_is_answered_with_its_close_code(bad: bytes, code: int) -> None:
    """The messages read before it still reach the app, then the disconnect with the code;
    the app's later sends fail as after a client's close, and a shutdown adds nothing."""
    log: list[Any] = []
    release = asyncio.Event()
    protocol = await open_protocol(AbortingWSProtocol, log, release)
    try:
        protocol.data_received(frame("one") + frame("two") + bad + frame("after"))
        assert [w[0] for w in log if w[0] != "pause"] == ["write", "close"]
        assert close_code(writes(log)[0]) == code
        got = [await protocol.receive() for _ in range(3)]
        assert [e.get("text") for e in got[:2]] == ["one", "two"]
        assert got[2]["type"] == "websocket.disconnect" and got[2]["code"] == code
        with pytest.raises(ClientDisconnected):
            await protocol.send({"type": "websocket.send", "text": "late"})
        log.clear()
        protocol.shutdown()  # the transport is still flushing: no second close frame
        assert log == [("close",)]
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), TIMEOUT)


@pytest.mark.parametrize("cls", [AbortingWSProtocol, PlainWSProtocol], ids=["fast", "plain"])
async def test_a_text_sent_after_the_apps_close_is_not_delivered(
    cls: type[AbortingWSProtocol],
) -> None:
    """uvicorn drops every frame but the close echo once the app has sent its close."""
    log: list[Any] = []
    release = asyncio.Event()
    protocol = await open_protocol(cls, log, release)
    try:
        await protocol.send({"type": "websocket.close", "code": 1000})
        assert close_code(writes(log)[0]) == 1000
        assert (await protocol.receive()) == {
            "type": "websocket.disconnect",
            "code": 1000,
            "reason": "",
        }
        log.clear()
        protocol.data_received(frame("late") + frame("later"))
        assert protocol.queue.empty() and log == []
        protocol.data_received(frame(struct.pack("!H", 1000), opcode=8))
        assert protocol.queue.empty() and log == [("close",)]
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), TIMEOUT)


async def test_a_shutdown_after_a_clients_close_was_answered_sends_nothing_more() -> None:
    """The answer is still flushing (the transport not lost yet): uvicorn alone asked
    wsproto for a 1012 close frame, which it refuses (LocalProtocolError)."""
    log: list[Any] = []
    release = asyncio.Event()
    protocol = await open_protocol(AbortingWSProtocol, log, release)
    try:
        protocol.data_received(frame(struct.pack("!H", 1000), opcode=8))
        assert close_code(writes(log)[0]) == 1000
        log.clear()
        protocol.shutdown()
        assert log == [("close",)]
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), TIMEOUT)
