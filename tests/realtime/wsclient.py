"""A small WebSocket test client and a live server on loopback for the gateway tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cmschat.api.transport import CaseKeepingHttpToolsProtocol
from cmschat.app import create_app
from cmschat.clock import Clock
from cmschat.realtime.transport import AbortingWSProtocol
from cmschat.settings import Settings

TIMEOUT = 10.0


@dataclass
class LiveServer:
    """A cmschat app served by uvicorn on a free loopback port."""

    app: FastAPI
    host: str
    scheme: str = "http"
    """``https`` for a server behind TLS (nginx in the deploy tests): then ``wss``."""

    @property
    def http(self) -> str:
        """Base URL for HTTP."""
        return f"{self.scheme}://{self.host}"

    @property
    def ws(self) -> str:
        """URL of the WebSocket endpoint."""
        return f"{'wss' if self.scheme == 'https' else 'ws'}://{self.host}/api/v1/ws"


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int = 0) -> AsyncIterator[LiveServer]:
    """Run ``app`` under uvicorn on 127.0.0.1 (``port``, or a free one) until the block ends."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        # The HTTP protocol `cmschat serve` runs (cli_server.HTTP_IMPLEMENTATION).
        http=CaseKeepingHttpToolsProtocol,
        ws=AbortingWSProtocol,
        ws_max_size=1 << 20,
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not server.started:
        if task.done():
            task.result()
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(app=app, host=f"127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=TIMEOUT)


@contextlib.asynccontextmanager
async def serve_app(
    settings: Settings, clock: Clock, **realtime: Any
) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    """A live server with some realtime settings changed, and HTTP to the same app."""
    changed = settings.model_copy(deep=True)
    for name, value in realtime.items():
        setattr(changed.realtime, name, value)
    async with serve(create_app(changed, clock=clock)) as live:
        transport = httpx.ASGITransport(app=live.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield live, http


class WsClient:
    """A signed-in protocol client that remembers the last seq it saw per room."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.seen: dict[int, int] = {}
        self.ready: dict[str, Any] = {}

    async def send(self, frame: dict[str, Any] | str) -> None:
        """Send a frame (a dict as JSON, a str as is)."""
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, within: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, tracking sequenced events."""
        frame: dict[str, Any] = json.loads(
            await asyncio.wait_for(self.connection.recv(), timeout=within)
        )
        if "seq" in frame and "room_id" in frame and frame["type"] != "resync_required":
            self.seen[frame["room_id"]] = frame["seq"]
        return frame

    async def recv_until(
        self, match: Callable[[dict[str, Any]], bool], within: float = TIMEOUT
    ) -> list[dict[str, Any]]:
        """Frames up to and including the first that matches."""
        frames = []
        deadline = asyncio.get_running_loop().time() + within
        while True:
            frame = await self.recv(within=max(0.01, deadline - asyncio.get_running_loop().time()))
            frames.append(frame)
            if match(frame):
                return frames

    async def ping(self) -> list[dict[str, Any]]:
        """Round-trip a ping: returns whatever arrived before the pong."""
        await self.send({"type": "ping"})
        return (await self.recv_until(lambda f: f["type"] == "pong"))[:-1]

    async def close_code(self, within: float = TIMEOUT) -> int | None:
        """Wait for the server to close the connection; its close code."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.connection.recv(), timeout=within)
        return self.connection.close_code


@contextlib.asynccontextmanager
async def ws_client(
    server: LiveServer,
    token: str | None,
    *,
    resume: dict[int, int] | None = None,
    headers: dict[str, str] | None = None,
    query: str = "",
    max_queue: int | None = 16,
    keepalive: float = 20,
) -> AsyncIterator[WsClient]:
    """Connect, send the auth frame (if a token is given) and wait for ``ready``.

    ``max_queue``: frames received and not yet read past which the client stops reading
    its socket (None: never stops, so it keeps answering the server's pings however far
    behind its reader is). ``keepalive``: seconds between the client's pings, and the
    longest it waits for the pong before it takes the link for dead and closes.
    """
    async with connect(
        server.ws + query,
        additional_headers=headers or {},
        ping_interval=keepalive,
        ping_timeout=keepalive,
        close_timeout=keepalive,
        open_timeout=TIMEOUT,
        max_size=1 << 22,
        max_queue=max_queue,
    ) as connection:
        client = WsClient(connection)
        if token is not None:
            await client.send(
                {
                    "type": "auth",
                    "token": token,
                    "resume": {str(k): v for k, v in (resume or {}).items()},
                }
            )
            client.ready = await client.recv()
            assert client.ready["type"] == "ready", client.ready
        yield client


def token_of(headers: dict[str, str]) -> str:
    """The bearer token in an Authorization header."""
    return headers["Authorization"].split()[1]
