"""What the hot paths cost in SQL: statements per HTTP send, WebSocket send, history page
and WebSocket replay, with the caches warm (the second request of a kind).

Counted with a ``before_cursor_execute`` listener on the app's engine: every statement the
driver runs, SQLite's BEGIN and COMMIT included. Run with ``-s`` to see them listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from cmschat.accounts.models import User
from cmschat.context import AppContext
from cmschat.websocket.backlog import RoomBacklog
from tests.realtime.test_gateway import make_room, post
from tests.realtime.wsclient import LiveServer, token_of, ws_client
from tests.support import NamedUser


@contextmanager
def statements_of(context: AppContext) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block, one line each."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(re.sub(r"\s+", " ", statement).strip()[:110])

    engine = context.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def show(kind: str, statements: list[str]) -> None:
    print(f"\n{kind}: {len(statements)} statements")  # noqa: T201 - read with -s
    for statement in statements:
        print("   ", statement)  # noqa: T201


async def measure(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> dict[str, list[str]]:
    """The statements of the second request of each kind (the first warms what it may)."""
    context: AppContext = server.app.state.context
    a = await alice.login(http)
    room = await make_room(http, a, bob)
    found: dict[str, list[str]] = {}
    for _ in range(2):
        with statements_of(context) as found["http send"]:
            await post(http, a, room, "by http")
    for _ in range(2):
        with statements_of(context) as found["history page"]:
            response = await http.get(f"/api/v1/rooms/{room}/messages", headers=a)
        assert response.status_code == 200
    async with ws_client(server, token_of(a)) as ws:
        for n in range(2):
            with statements_of(context) as found["websocket send"]:
                await ws.send(
                    {"type": "message.send", "room_id": room, "content": "ws", "client_id": f"c{n}"}
                )
                await ws.recv_until(lambda f: f["type"] == "ack")
    async with context.db.unit_of_work() as session:
        user = await session.get(User, alice.id)
    assert user is not None
    backlog = RoomBacklog(context, user)
    for _ in range(2):
        with statements_of(context) as found["websocket replay"]:
            events, resync = await backlog.after(room, after=0, until=None, limit=100)
        assert resync is None and len(events) >= 4
    for kind, statements in found.items():
        show(kind, statements)
    return found


async def test_statements_per_hot_request(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    found = await measure(server, http, alice, bob)
    assert found
