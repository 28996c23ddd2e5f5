"""Read-only connections kept checked out between history pages (``db/readers.py``).

A warm page takes no connection from the pool and gives none back (no checkout or checkin
events, no pre-ping or reset round trip on MariaDB); what the pool did for the page is done
by ``Readers``: a connection the server dropped is replaced and the page still answered, a
kept connection holds no transaction (a migration's ``ALTER TABLE`` does not wait on it),
and disposing of the database gives every kept connection back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from cmschat.context import AppContext
from cmschat.db.driver_sql import Driver, Statement
from cmschat.db.readers import Readers
from cmschat.db.write_lock import ReadOnlyWrite
from tests.api.test_messages import ROOMS, group, send
from tests.support import NamedUser

Headers = dict[str, str]


@contextmanager
def pool_events(context: AppContext) -> Iterator[list[str]]:
    """The pool's checkouts and checkins inside the block."""
    seen: list[str] = []
    engine = context.db.engine.sync_engine

    def checkout(*_args: Any) -> None:
        seen.append("checkout")

    def checkin(*_args: Any) -> None:
        seen.append("checkin")

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield seen
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


async def a_room(client: httpx.AsyncClient, alice: NamedUser) -> tuple[str, Headers]:
    a = await alice.login(client)
    room = await group(client, a)
    await send(client, a, room, "hello")
    return f"{ROOMS}/{room}/messages", a


async def page(client: httpx.AsyncClient, url: str, headers: Headers) -> list[str]:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return [item["content"] for item in response.json()["items"]]


async def test_a_warm_page_takes_no_connection_from_the_pool(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    url, a = await a_room(client, alice)
    assert await page(client, url, a) == ["hello"]
    with pool_events(context) as seen:
        assert await page(client, url, a) == ["hello"]
    assert seen == []
    # A refused page (not a member: a 404 raised between statements) keeps its reader too.
    with pool_events(context) as seen:
        response = await client.get(f"{ROOMS}/999999/messages", headers=a)
        assert response.status_code == 404
        assert await page(client, url, a) == ["hello"]
    assert seen == []


async def test_disposing_of_the_database_gives_the_kept_readers_back(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    url, a = await a_room(client, alice)
    await context.db.writer.close()  # the group commit's kept connection: not a reader
    await page(client, url, a)
    pool = context.db.engine.sync_engine.pool
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    await context.db.readers.close()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    # A page after that reads on a connection from the pool and gives it back.
    assert await page(client, url, a) == ["hello"]
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_kept_reader_refuses_a_write(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    url, a = await a_room(client, alice)
    await page(client, url, a)  # a reader is kept now
    rename = Statement(lambda _dialect: text("UPDATE rooms SET name = 'x'"), [])

    async def write(driver: Driver) -> None:
        await driver.rows(rename, ())

    with pytest.raises(ReadOnlyWrite, match="read-only"):
        async with context.db.readers.reading(write):
            pass


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_page_after_the_server_dropped_the_kept_connection_is_answered(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    url, a = await a_room(client, alice)
    await page(client, url, a)
    async with context.db.engine.connect() as connection:
        others = (
            await connection.execute(
                text(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
            )
        ).scalars()
        for thread in others:
            await connection.execute(text(f"KILL {int(thread)}"))
    assert await page(client, url, a) == ["hello"]
    assert await page(client, url, a) == ["hello"]


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_kept_reader_holds_no_lock_a_migration_would_wait_for(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    url, a = await a_room(client, alice)
    await page(client, url, a)
    # A reader and the group commit's writer (db/writer.py), each kept: neither holds a lock.
    assert context.db.engine.sync_engine.pool.checkedout() == 2  # type: ignore[attr-defined]
    async with context.db.engine.connect() as connection:
        await connection.execute(text("SET SESSION lock_wait_timeout = 2"))
        # Waits for every open transaction that read ``messages`` (its metadata lock).
        await connection.execute(text("ALTER TABLE messages COMMENT = 'kept readers'"))
    assert await page(client, url, a) == ["hello"]


async def _nothing(_driver: Driver) -> None:
    return None


async def test_a_reader_is_not_kept_while_the_pool_is_past_its_size(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db", pool_size=1)
    pool = engine.sync_engine.pool
    readers = Readers(engine)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            async with readers.reading(_nothing):
                assert pool.checkedout() == 2  # type: ignore[attr-defined]
            assert pool.checkedout() == 1  # type: ignore[attr-defined]
        async with readers.reading(_nothing):
            pass
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
    finally:
        await readers.close()
        await engine.dispose()


async def test_forty_pages_at_once_with_a_revoked_token_among_them(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    """Forty pages at once: each valid one answered whole, the revoked token's refused on
    its very first page, and no more connections kept than ``Readers`` keeps."""
    from cmschat.db.readers import KEEP

    url, a = await a_room(client, alice)
    await context.db.writer.close()  # the group commit's kept connection: not a reader
    revoked = await alice.login(client)
    assert (await client.post("/api/v1/auth/logout", headers=revoked)).status_code == 204

    responses = await asyncio.gather(
        *(client.get(url, headers=revoked if n % 10 == 0 else a) for n in range(40))
    )
    statuses = [response.status_code for response in responses]
    assert statuses.count(401) == 4 and statuses.count(200) == 36, statuses
    assert {r.text for r in responses if r.status_code == 200} == {responses[1].text}
    pool = context.db.engine.sync_engine.pool
    assert pool.checkedout() <= KEEP  # type: ignore[attr-defined]
    await context.db.readers.close()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_pages_at_once_wait_for_a_kept_reader_rather_than_take_more(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    """Thirty pages at once on SQLite: never more connections out than ``Readers`` keeps
    (each SQLite connection is a thread contending for the interpreter); all answered."""
    from cmschat.db.readers import KEEP

    url, a = await a_room(client, alice)
    await context.db.writer.close()  # the group commit's kept connection: not a reader
    engine = context.db.engine.sync_engine
    out = {"now": engine.pool.checkedout(), "most": 0}  # type: ignore[attr-defined]

    def checkout(*_args: Any) -> None:
        out["now"] += 1
        out["most"] = max(out["most"], out["now"])

    def checkin(*_args: Any) -> None:
        out["now"] -= 1

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        responses = await asyncio.gather(*(client.get(url, headers=a) for _ in range(30)))
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)
    assert [response.status_code for response in responses] == [200] * 30
    assert 1 <= out["most"] <= KEEP, out
