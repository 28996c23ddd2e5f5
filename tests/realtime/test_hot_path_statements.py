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
import pytest
from sqlalchemy import event

from cmschat.accounts.models import User
from cmschat.context import AppContext
from cmschat.websocket.backlog import RoomBacklog
from tests.integration.test_batch_trips import trips_of
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
    print(f"\n{kind}: {len(statements)} statements")
    for statement in statements:
        print("   ", statement)


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


BEFORE_CACHES = {
    "sqlite": {"http send": 13, "history page": 7, "websocket send": 12, "websocket replay": 8},
    "mysql": {"http send": 11, "history page": 5, "websocket send": 11, "websocket replay": 7},
}
"""Measured before the caches (chat/caches.py): each kind asked for the membership, or
the replayed members' names, once more."""


async def test_warm_caches_take_a_statement_off_every_hot_request(
    server: LiveServer, http: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    found = await measure(server, http, alice, bob)
    context: AppContext = server.app.state.context
    dialect = context.db.engine.dialect.name
    before = BEFORE_CACHES[dialect]
    expected = {kind: count - 1 for kind, count in before.items()}
    # INSERT ... RETURNING: a send's batch no longer reads its messages' ids back.
    expected["http send"] -= 1
    expected["websocket send"] -= 1
    assert not [s for s in found["websocket send"] if s.startswith("SELECT messages.id, ")]
    if dialect == "mysql":
        # The message insert numbers the seqs itself (message_insert.numbered): the rooms'
        # last_seq is no longer read between the update and it (a round trip of its own).
        expected["http send"] -= 1
        expected["websocket send"] -= 1
        assert not [s for s in found["websocket send"] if s.startswith("SELECT rooms.id, ")]
    # A history page is two statements on either backend: the token's row and the page
    # with its mentions and files folded in (chat/messages/page_json.py), on a pooled
    # connection with no BEGIN or COMMIT (api.deps.reading_signed_in).
    expected["history page"] = 2
    assert not [s for s in found["history page"] if s.startswith(("BEGIN", "COMMIT"))]
    assert {kind: len(found[kind]) for kind in before} == expected
    assert "BEGIN IMMEDIATE" not in found["history page"]
    for kind in ("http send", "history page", "websocket send"):
        assert not [s for s in found[kind] if "FROM room_members" in s], kind
    assert not [s for s in found["websocket replay"] if s.startswith("SELECT users.id")]
    # The replay only reads: on SQLite it no longer queues for the write lock.
    assert "BEGIN IMMEDIATE" not in found["websocket replay"]


PAGE_TRIPS = {"sqlite": 1, "mysql": 2}
"""Trips to the driver of a warm history page: SQLite's calls into aiosqlite, MariaDB's
round trips (``test_batch_trips.trips_of``; a kept reader is neither pinged nor reset)."""
PAGE_TRIPS_BEFORE = {"sqlite": 2, "mysql": 2}
"""The same before the token's row and the page shared a trip to SQLite's driver thread."""


async def test_a_history_page_reads_its_token_and_page_in_one_trip(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    context: AppContext = server.app.state.context
    a = await alice.login(http)
    room = await make_room(http, a, bob)
    await post(http, a, room, "hello")
    for _ in range(2):
        with trips_of(context, monkeypatch) as trips:
            response = await http.get(f"/api/v1/rooms/{room}/messages", headers=a)
        assert response.status_code == 200
        assert [m["content"] for m in response.json()["items"]][:1] == ["hello"]
    print("\nhistory page trips:", trips)
    dialect = context.db.engine.dialect.name
    assert len(trips) == PAGE_TRIPS[dialect]
    assert PAGE_TRIPS[dialect] <= PAGE_TRIPS_BEFORE[dialect]
