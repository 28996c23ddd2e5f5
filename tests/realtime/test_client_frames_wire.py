"""Clients' text frames over a real socket: bursts with control frames between and inside
them, cut anywhere, are answered in order (the short cut in ``client_frames`` at work)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Pong, Request, TextMessage

from tests.realtime.test_client_frames import frame
from tests.realtime.wsclient import TIMEOUT, LiveServer, token_of
from tests.support import NamedUser


class RawClient:
    """A WebSocket client whose frames are written byte for byte by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.events: list[Any] = []

    @classmethod
    async def open(cls, server: LiveServer) -> RawClient:
        """Connect and complete the handshake."""
        url = urlsplit(server.ws)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        client = cls(reader, writer)
        await client.write(client.conn.send(Request(host=server.host, target=url.path)))
        assert isinstance((await client.next_events(1))[0], AcceptConnection)
        client.events.clear()
        return client

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_events(self, count: int) -> list[Any]:
        """Read until ``count`` events have arrived in all (or the server closes)."""
        async with asyncio.timeout(TIMEOUT):
            while len(self.events) < count:
                data = await self.reader.read(65536)
                self.conn.receive_data(data or None)
                self.events.extend(self.conn.events())
                if not data:
                    break
        return self.events

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def answers(events: list[Any]) -> list[Any]:
    """Text frames as their ``type``, pongs as ``("pong", payload)``."""
    return [
        json.loads(e.data)["type"]
        if isinstance(e, TextMessage)
        else ("pong", bytes(e.payload))
        if isinstance(e, Pong)
        else type(e).__name__
        for e in events
    ]


@pytest.mark.parametrize("database_url", ["sqlite", "mariadb"], indirect=True)
async def test_a_burst_with_pings_inside_is_answered_in_order(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    token = token_of(await alice.login(http))
    app_ping = json.dumps({"type": "ping"})
    stream = (
        frame(json.dumps({"type": "auth", "token": token, "resume": {}}))
        + frame(app_ping)
        + frame(b"w1", opcode=9)
        + frame(app_ping) * 3
        + frame(b"w2", opcode=9)
        + frame(app_ping + " " * 200)  # a 2-byte length
    )
    expected = ["ready", "pong", ("pong", b"w1"), "pong", "pong", "pong", ("pong", b"w2"), "pong"]
    for cut in (None, 1, 5, len(stream) // 2, len(stream) - 3):
        client = await RawClient.open(server)
        try:
            if cut is None:
                await client.write(stream)
            else:
                await client.write(stream[:cut])
                await client.write(stream[cut:])
            # The control frames' answers are written at once, the texts' after the app's
            # turn: only the order within each kind is the wire's to keep.
            got = answers(await client.next_events(len(expected)))
            assert sorted(got, key=str) == sorted(expected, key=str)
            assert [a for a in got if isinstance(a, tuple)] == [("pong", b"w1"), ("pong", b"w2")]
            assert [a for a in got if not isinstance(a, tuple)] == [
                a for a in expected if not isinstance(a, tuple)
            ]
        finally:
            await client.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("bad", "code"),
    [(b'{"type": "ping", "x": "\xc3\x28"}', 1007), (b"stray continuation", 1002)],
    ids=["1007", "1002"],
)
async def test_a_bad_frame_after_good_ones_is_answered_with_a_close_frame(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bad: bytes, code: int
) -> None:
    token = token_of(await alice.login(http))
    client = await RawClient.open(server)
    try:
        await client.write(
            frame(json.dumps({"type": "auth", "token": token, "resume": {}}))
            + frame(json.dumps({"type": "ping"}))
            + frame(bad, opcode=1 if code == 1007 else 0)
            + frame(json.dumps({"type": "ping"}))
        )
        got = await client.next_events(10)  # until the server closes
        # The close frame says what the client did wrong (RFC 6455 7.1.7), where uvicorn
        # alone dropped the socket without one (the client saw 1006). Nothing may follow a
        # close frame, so the frames before it are answered only if the server read them
        # in an earlier read than the bad one; the frame after it is never read.
        first = next(i for i, e in enumerate(got) if isinstance(e, CloseConnection))
        assert got[first].code == code
        assert answers(got[:first]) in (["ready", "pong"][:n] for n in range(3))
        assert all(isinstance(e, CloseConnection) for e in got[first:])
    finally:
        await client.close()
