"""What an idle WebSocket costs the server (issue 16; docs/performance.md, section 1).

A chat server holds thousands of connections that do nothing for hours, so what each one
keeps alive is its capacity. These tests catch the return of what connections used to
keep: the ORM rows and the database session of the sign-in, FastAPI's per-request
machinery, and more Python objects per connection than the budget measured below.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from bench import children
from cmschat.accounts.models import AuthToken, User
from cmschat.context import AppContext
from tests.realtime.wsclient import LiveServer, WsClient, token_of, ws_client
from tests.support import NamedUser

CLIENTS = Path(__file__).with_name("idle_clients.py")
COUNT = 200
BUDGET_KIB = 22
"""Python allocations per idle connection, under tracemalloc, on asyncio's own event loop
(its transports are Python objects; uvloop's are not). Measured 17.3 KiB after the
changes of issue 16, 43.5 KiB before them."""


def alive(kind: type) -> int:
    """How many instances of ``kind`` the garbage collector can see."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


def awaited_frames(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines a task is suspended in, outermost first, as ``file:function``."""
    frames = []
    awaited: Any = task.get_coro()
    while (code := getattr(awaited, "cr_code", None)) is not None:
        frames.append(f"{code.co_filename}:{code.co_qualname}")
        awaited = awaited.cr_await
    return frames


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_idle_connection_waits_outside_fastapis_request_machinery(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    # Each layer a connection passes through keeps its coroutine frame (and FastAPI's an
    # AsyncExitStack) alive for as long as the connection: none of FastAPI's, Starlette's
    # middleware or routing should be among those around the gateway.
    async with ws_client(server, token_of(await alice.login(http))) as client:
        await client.ping()
        chains = [awaited_frames(task) for task in asyncio.all_tasks()]
        chain = next(c for c in chains if any("ClientSocket._receive_loop" in f for f in c))
    ours = next(i for i, f in enumerate(chain) if "/cmschat/websocket/" in f)
    outer = chain[:ours]  # what serves the connection before the WebSocket code itself
    layers = [f for f in outer if "/fastapi/" in f or "/starlette/" in f or "contextlib" in f]
    assert layers == [], "\n".join(chain)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_open_connection_keeps_no_orm_rows_or_database_session(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    tokens = [token_of(await alice.login(http)), token_of(await bob.login(http))]
    async with ws_client(server, tokens[0]) as warm:  # imports and caches, before counting
        await warm.ping()
    kinds = (User, AuthToken, AsyncSession)
    before = {kind.__name__: alive(kind) for kind in kinds}
    async with contextlib.AsyncExitStack() as stack:
        clients: list[WsClient] = [
            await stack.enter_async_context(ws_client(server, tokens[i % 2])) for i in range(20)
        ]
        for client in clients:
            await client.ping()  # each connection is past its opening, idle in its loop
        context: AppContext = server.app.state.context
        assert len(context.hub.all_connections()) == 20
        after = {kind.__name__: alive(kind) for kind in kinds}
    assert after == before


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_idle_connection_holds_few_python_objects(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    token = token_of(await alice.login(http))
    async with ws_client(server, token) as warm:  # imports and caches, before measuring
        await warm.ping()
    gc.collect()
    # Started now, tracemalloc sees only what is allocated from here on: the connections.
    # Their clients run in another process so that only the server's side is counted.
    tracemalloc.start(1)
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENTS),
        server.ws,
        token,
        str(COUNT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=children.with_parent(),
    )
    try:
        assert clients.stdout is not None
        line = await asyncio.wait_for(clients.stdout.readline(), timeout=180)
        assert line.decode().split() == ["open", str(COUNT)]
        context: AppContext = server.app.state.context
        assert len(context.hub.all_connections()) == COUNT
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        assert clients.stdin is not None
        clients.stdin.close()
        await asyncio.wait_for(clients.wait(), timeout=60)
    sites = snapshot.statistics("lineno")
    per_connection_kib = sum(stat.size for stat in sites) / COUNT / 1024
    top = "\n".join(f"{stat.size / COUNT:8.0f} B  {stat.traceback[0]}" for stat in sites[:15])
    assert per_connection_kib <= BUDGET_KIB, f"{per_connection_kib:.1f} KiB per connection:\n{top}"
