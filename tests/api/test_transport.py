"""The HTTP protocol ``serve`` runs: uvicorn's httptools, with the response head h11 wrote.

Each expected answer below is the byte string uvicorn's h11 protocol wrote for the same
response (the app's header names as given, ``Transfer-Encoding: chunked`` and
``Connection: close`` in h11's spelling and place); uvicorn's stock httptools protocol
lower-cases every one of those names.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from cmschat.api import transport
from cmschat.api.transport import CaseKeepingHttpToolsProtocol

STATUS = {204: [(b"X-Request-Id", b"r1")], 304: [(b"ETag", b'"v1"')]}
# Each refused by the head's checks wherever it stands, after headers that pass.
BAD = {
    "/bad-name": [(b"content-length", b"0"), (b"X-Ok", b"1"), (b"Bad Name", b"v")],
    "/bad-value": [(b"content-length", b"0"), (b"X-Ok", b"1"), (b"X-Bad", b"a\nb")],
    "/bad-control": [(b"X-Ok", b"1"), (b"X-Bad\x7f", b"1"), (b"content-length", b"0")],
    "/bad-cr": [(b"X-Ok", b"1"), (b"X-Bad", b"a\rInjected: 1"), (b"content-length", b"0")],
    "/bad-nul": [(b"content-length", b"0"), (b"X-Bad", b"a\x00b")],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers shaped by the path: a length, chunks, no body, a closing app."""
    path = scope["path"]
    if path == "/length":
        headers = [(b"Content-Type", b"text/plain"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/chunks":
        headers = [(b"Content-Security-Policy", b"default-src 'none'")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})
    elif path in BAD:
        await send({"type": "http.response.start", "status": 200, "headers": BAD[path]})
        await send({"type": "http.response.body"})
    elif path == "/closing":
        headers = [(b"content-length", b"0"), (b"Connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body"})
    else:
        status = int(path.strip("/"))
        await send({"type": "http.response.start", "status": status, "headers": STATUS[status]})
        await send({"type": "http.response.body"})


@pytest.fixture
async def address() -> AsyncIterator[tuple[str, int]]:
    """The protocol serving ``app`` on a free port, with a fixed date header."""
    config = uvicorn.Config(app, log_config=None, server_header=False, lifespan="off")
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Tue, 01 Dec 2026 21:00:00 GMT")]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: CaseKeepingHttpToolsProtocol(config, state, {}), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        for protocol in list(state.connections):
            protocol.shutdown()
        server.close()
        await server.wait_closed()


DATE = b"HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 21:00:00 GMT\r\n"
CASES = [
    ("GET /length", b"", DATE + b"Content-Type: text/plain\r\ncontent-length: 2\r\n\r\nok"),
    (
        "GET /chunks",
        b"",
        DATE + b"Content-Security-Policy: default-src 'none'\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
    ),
    # A HEAD answer is framed as the GET's, with no body.
    (
        "HEAD /chunks",
        b"",
        DATE + b"Content-Security-Policy: default-src 'none'\r\nTransfer-Encoding: chunked\r\n\r\n",
    ),
    ("HEAD /length", b"", DATE + b"Content-Type: text/plain\r\ncontent-length: 2\r\n\r\n"),
    (
        "GET /204",
        b"",
        DATE.replace(b"200 OK", b"204 No Content") + b"X-Request-Id: r1\r\n\r\n",
    ),
    ("GET /304", b"", DATE.replace(b"200 OK", b"304 Not Modified") + b'ETag: "v1"\r\n\r\n'),
    (
        "GET /chunks",
        b"Connection: close\r\n",
        DATE + b"Content-Security-Policy: default-src 'none'\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
    ),
    ("GET /closing", b"", DATE + b"content-length: 0\r\nConnection: close\r\n\r\n"),
]


@pytest.mark.parametrize(("request_line", "extra", "expected"), CASES)
async def test_the_head_is_written_as_h11_wrote_it(
    address: tuple[str, int], request_line: str, extra: bytes, expected: bytes
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request_line.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        assert await reader.readexactly(len(expected)) == expected
        if b"Connection: close" in expected:
            assert await reader.read() == b""
    finally:
        writer.close()


@pytest.mark.parametrize("path", sorted(BAD))
async def test_a_head_with_a_bad_header_anywhere_is_never_written(
    address: tuple[str, int], path: str
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # uvicorn closes a connection whose app failed after starting its response.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_a_kept_connection_serves_the_next_request(address: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        for _ in range(2):
            writer.write(b"GET /length HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"\r\nContent-Type: text/plain\r\n" in head
            assert await reader.readexactly(2) == b"ok"
    finally:
        writer.close()


def test_serve_runs_the_case_keeping_httptools_protocol() -> None:
    from cmschat.cli_server import uvicorn_config
    from cmschat.settings import Settings

    config = uvicorn_config(app, Settings(environment="test"), host="127.0.0.1", port=0)
    config.load()
    assert config.http_protocol_class is CaseKeepingHttpToolsProtocol
    assert issubclass(config.http_protocol_class, HttpToolsProtocol)


async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept a WebSocket and hold it until the client goes."""
    await receive()
    await send({"type": "websocket.accept"})
    await receive()


async def test_an_upgraded_connection_lets_go_of_the_http_protocol() -> None:
    # Idle WebSockets live for hours: what the handshake left must go by reference counting,
    # not wait for the cycle collector (off for this test).
    config = uvicorn.Config(ws_app, log_config=None, lifespan="off", ws="wsproto")
    config.load()
    state = ServerState()
    made: list[weakref.ref[CaseKeepingHttpToolsProtocol]] = []

    def protocol() -> CaseKeepingHttpToolsProtocol:
        made.append(weakref.ref(instance := CaseKeepingHttpToolsProtocol(config, state, {})))
        return instance

    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    gc.disable()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        assert len(made) == 1
        assert made[0]() is None
    finally:
        writer.close()
        gc.enable()
        for connection in list(state.connections):
            connection.shutdown()
        server.close()
        await server.wait_closed()


# RFC 9112: an HTTP/1.0 client knows no chunked coding; a body without a length ends with
# the connection (uvicorn keeps no 1.0 connection open, so every answer says close).
CASES_1_0 = [
    (
        "GET /chunks",
        DATE + b"Content-Security-Policy: default-src 'none'\r\nConnection: close\r\n\r\nabcd",
    ),
    (
        "HEAD /chunks",
        DATE + b"Content-Security-Policy: default-src 'none'\r\nConnection: close\r\n\r\n",
    ),
    (
        "GET /length",
        DATE + b"Content-Type: text/plain\r\ncontent-length: 2\r\nConnection: close\r\n\r\nok",
    ),
]


@pytest.mark.parametrize(("request_line", "expected"), CASES_1_0)
async def test_an_http_1_0_client_gets_no_chunks(
    address: tuple[str, int], request_line: str, expected: bytes
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request_line.encode() + b" HTTP/1.0\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == expected
    finally:
        writer.close()


@pytest.mark.parametrize("disabled", [True, False])
async def test_uvicorns_access_line_is_built_only_when_its_logger_writes(
    address: tuple[str, int], monkeypatch: pytest.MonkeyPatch, disabled: bool
) -> None:
    """cmschat disables ``uvicorn.access`` (it writes its own line): a page then builds none
    of that line's arguments; an enabled logger still gets its line."""
    built: list[str] = []
    written: list[logging.LogRecord] = []

    def path_of(scope: dict[str, Any]) -> str:
        built.append(scope["path"])
        return str(scope["path"])

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record)

    logger = logging.getLogger("uvicorn.access")
    handler = Kept()
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "disabled", disabled)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel clears the logger's cache of levels enabled
    monkeypatch.setattr(transport, "get_path_with_query_string", path_of)
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(b"GET /length HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        assert await reader.readexactly(2) == b"ok"
    finally:
        writer.close()
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert built == ([] if disabled else ["/length"])
    assert [record.args[2] for record in written] == ([] if disabled else ["/length"])  # type: ignore[index]
