"""The busy door's edges (api/busy.py): bodies too large or of unknown length, browsers'
posts (which always carry ``Origin``), and the draining server's 503 to an upgrade."""

from __future__ import annotations

import asyncio
import json
import re
import tracemalloc
from collections.abc import AsyncIterator
from typing import cast

import h11
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from cmschat.api.busy import BusyRefusal
from cmschat.app import CmschatApp
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.observability.middleware import SECURITY_HEADERS
from cmschat.settings import Settings
from tests.realtime.test_busy_posts import KeptConnection
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import TIMEOUT, LiveServer, serve_app, token_of, ws_client
from tests.support import NamedUser

TEN_MB = 10 << 20
CHUNK = 64 << 10
BUFFERED_AT_MOST = 2 << 20
"""Peak Python memory of client and server together while a 10 MB body goes by: a body
read into memory anywhere would pass it five times."""


async def streamed_post(
    host: str, path: str, headers: dict[str, str], size: int, *, chunked: bool = False
) -> tuple[int, bytes, KeptConnection]:
    """POST ``size`` bytes on a new connection, in chunks as a client streams a file (the
    declared length, or chunked); the status and body of the answer, and the connection."""
    address, port = host.split(":")
    kept = KeptConnection(*await asyncio.open_connection(address, int(port)))
    fields = [("Host", host), ("Content-Type", "application/json"), *headers.items()]
    fields.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size)))
    kept.writer.write(kept.conn.send(h11.Request(method="POST", target=path, headers=fields)))
    piece = b" " * CHUNK
    for _ in range(size // CHUNK):
        kept.writer.write(kept.conn.send(h11.Data(data=piece)) or b"")
        await asyncio.wait_for(kept.writer.drain(), TIMEOUT)
    kept.writer.write(kept.conn.send(h11.EndOfMessage()) or b"")
    await asyncio.wait_for(kept.writer.drain(), TIMEOUT)
    status, chunks = 0, []
    while True:
        event = kept.conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(kept.reader.read(65536), TIMEOUT)
            assert data, "the server closed the connection without an answer"
            kept.conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return status, b"".join(chunks), kept


async def close(kept: KeptConnection) -> None:
    """Close the client's side and wait until it is closed."""
    kept.writer.close()
    await kept.writer.wait_closed()


@pytest.fixture
async def full(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> AsyncIterator[tuple[LiveServer, dict[str, str], str]]:
    """A live server whose admission is full: (server, alice's headers, a room's send path)."""
    async with serve_app(settings, clock) as (live, http):
        a = await alice.login(http)
        path = f"/api/v1/rooms/{await make_room(http, a, bob)}/messages"
        admission = live.app.state.context.admission
        admission.in_flight = admission.limit
        try:
            yield live, a, path
        finally:
            admission.in_flight = 0


async def test_a_body_over_the_limit_gets_413_while_busy_and_is_never_read_into_memory(
    full: tuple[LiveServer, dict[str, str], str],
) -> None:
    """A 10 MB post would be refused whenever sent: 413 (as when not busy), not ``busy``."""
    live, a, path = full
    tracemalloc.start()
    try:
        status, raw, kept = await streamed_post(live.host, path, a, TEN_MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    assert json.loads(raw)["error"]["code"] == "too_large"
    assert peak < BUFFERED_AT_MOST
    await close(kept)
    # The next request, on a new connection, is answered: busy, since the process is full.
    fresh = KeptConnection(*await asyncio.open_connection(*live.host.split(":")))
    refused, _ = await fresh.post(live.host, path, a, b'{"content": "x"}')
    await close(fresh)
    assert refused.status_code == 503


async def test_a_body_of_unknown_length_is_refused_busy_at_once_and_drained_not_buffered(
    full: tuple[LiveServer, dict[str, str], str],
) -> None:
    live, a, path = full
    tracemalloc.start()
    try:
        status, raw, kept = await streamed_post(live.host, path, a, TEN_MB, chunked=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 503
    assert json.loads(raw)["error"]["code"] == "busy"
    assert peak < BUFFERED_AT_MOST
    # The rest of the body was discarded: the same connection serves the next request.
    again, _ = await kept.post(live.host, path, a, b'{"content": "x"}')
    await close(kept)
    assert again.status_code == 503


CORS_HEADERS = re.compile(r"access-control-.*|vary", re.IGNORECASE)


@pytest.mark.parametrize(
    "origin",
    ["http://testserver", "https://chat.example", "https://evil.example"],
    ids=["same-origin", "allowed", "foreign"],
)
async def test_a_browser_post_is_refused_at_the_door_with_the_stacks_cors_headers(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser, origin: str
) -> None:
    """Browsers send ``Origin`` with every post, their own site's included: the door takes
    them all (while CORS is configured) and answers with the CORS headers the stack would."""
    settings = settings.model_copy(update={"cors_origins": ["https://chat.example"]})
    async with serve_app(settings, clock) as (live, http):
        a = await alice.login(http)
        path = f"/api/v1/rooms/{await make_room(http, a, bob)}/messages"
        app = cast(CmschatApp, live.app)
        door = app.busy
        assert isinstance(door, BusyRefusal)
        admission = live.app.state.context.admission
        admission.in_flight = admission.limit
        headers = {**a, "Origin": origin}
        try:
            at_door = await http.post(path, headers=headers, json={"content": "x"})
            refused_at_door = door.log.count
            app.busy = None  # the same request through the stack, to compare
            through_stack = await http.post(path, headers=headers, json={"content": "x"})
            app.busy = door
        finally:
            admission.in_flight = 0
    assert refused_at_door == 1
    assert at_door.status_code == through_stack.status_code == 503
    assert at_door.json()["error"]["code"] == "busy"

    def cors(answer: httpx.Response) -> dict[str, str]:
        return {k.lower(): v for k, v in answer.headers.items() if CORS_HEADERS.fullmatch(k)}

    assert cors(at_door) == cors(through_stack)
    if origin == "https://chat.example":
        assert at_door.headers["access-control-allow-origin"] == origin
        assert "Retry-After" in at_door.headers["access-control-expose-headers"]
    else:
        assert "access-control-allow-origin" not in at_door.headers


async def test_a_draining_servers_503_to_an_upgrade_has_the_stacks_headers(
    settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    settings = settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    async with serve_app(settings, clock) as (live, http):
        token = token_of(await alice.login(http))
        context: AppContext = live.app.state.context
        context.draining = True
        answers = []
        try:
            for proto in ("http", "https"):
                with pytest.raises(InvalidStatus) as refused:
                    async with ws_client(live, token, headers={"X-Forwarded-Proto": proto}):
                        pass
                answers.append(refused.value.response)
        finally:
            context.draining = False
    ids = set()
    for answer in answers:
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert json.loads(answer.body)["error"]["code"] == "shutting_down"
        assert answer.headers["Cache-Control"] == "no-store"
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])
        ids.add(answer.headers["X-Request-ID"])
    assert len(ids) == 2
    plain, tls = answers
    assert "Strict-Transport-Security" not in plain.headers
    assert tls.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
