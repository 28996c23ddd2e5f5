"""History pages on the lean read path: a fixed number of statements, whatever the page holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from cmschat.context import AppContext
from tests.api.test_messages import ROOMS, group, page, send
from tests.support import NamedUser

STATEMENTS_PER_PAGE = 6
"""Token check (+ a possible refresh), membership, messages with authors, mentions, files."""


@contextmanager
def statements(context: AppContext) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs meanwhile (BEGIN/COMMIT are not statements)."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        if not args[2].startswith("BEGIN"):  # SQLite opens transactions with a statement
            seen.append(args[2])

    engine = context.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_history_page_takes_the_same_few_statements_for_1_or_40_messages(
    client: httpx.AsyncClient, context: AppContext, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await send(client, a, room_id, "first @bob")
    await page(client, b, room_id)  # the token's last_used_at refresh is not the page's
    with statements(context) as one:
        assert len((await page(client, b, room_id))["items"]) == 1
    for i in range(39):
        await send(client, a if i % 2 else b, room_id, f"message {i} @alice")
    with statements(context) as forty:
        body = await page(client, b, room_id, limit=40)
    assert len(body["items"]) == 40
    assert body["items"][0]["mentions"] == [alice.id]
    assert len(forty) == len(one) <= STATEMENTS_PER_PAGE, forty


async def test_a_removed_member_cannot_read_the_history_at_once(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await send(client, a, room_id, "before")
    assert len((await page(client, b, room_id))["items"]) == 1
    removed = await client.delete(f"{ROOMS}/{room_id}/members/{bob.id}", headers=a)
    assert removed.status_code == 204
    answer = await client.get(f"{ROOMS}/{room_id}/messages", headers=b)
    assert answer.status_code == 404
