"""MariaDB reads a page's rows without a stored tail after the page, by id
(``chat/messages/page_built.py``): two reads, each row shown whole as one of them saw it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import delete as delete_rows
from sqlalchemy import update

from cmschat import jsonbytes
from cmschat.chat.messages import page_built
from cmschat.chat.models import Message, RoomEvent
from cmschat.context import AppContext
from cmschat.db.driver_sql import Driver, Row
from cmschat.db.readers import reading
from tests.api.test_history_bytes import old_page_bytes
from tests.api.test_messages import ROOMS, edit, group, send
from tests.support import NamedUser

pytestmark = pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)


async def test_a_page_without_tailed_rows_reads_no_more(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext, monkeypatch: Any
) -> None:
    """Rows with a stored tail only: no read by id. An edited row: one, for it alone."""
    a = await alice.login(client)
    room = await group(client, a)
    first, _second = [await send(client, a, room, text) for text in ("first", "second")]
    asked: list[list[int]] = []
    completed = page_built.completed

    async def counting(driver: Driver, found: list[Row], *, ready: Any) -> list[Row]:
        asked.append([row[0] for row in found if row[6] is None])
        return await completed(driver, found, ready=ready)

    monkeypatch.setattr(page_built, "completed", counting)
    page = await client.get(f"{ROOMS}/{room}/messages", headers=a)
    assert page.content == await old_page_bytes(context, page.json())
    assert (await edit(client, a, first["id"], "first, edited")).status_code == 200
    edited = await client.get(f"{ROOMS}/{room}/messages", headers=a)
    assert edited.content == await old_page_bytes(context, edited.json())
    assert asked == [[], [first["id"]]]
    assert [m["content"] for m in edited.json()["items"]] == ["second", "first, edited"]


async def test_rows_changed_between_the_two_reads_are_shown_whole(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext, monkeypatch: Any
) -> None:
    """Between the page's read and the read by id: a row with a tail is edited (its tail
    cleared), a row without one is edited again, another is purged. The first shows as the
    page read it, the second as the read by id did, the third not at all."""
    a = await alice.login(client)
    room = await group(client, a)
    sent = [await send(client, a, room, text) for text in ("one", "two", "three", "four")]
    one, two, three, four = (message["id"] for message in sent)
    for untailed in (one, two):
        assert (await edit(client, a, untailed, "edited")).status_code == 200
    before = (await client.get(f"{ROOMS}/{room}/messages", headers=a)).json()["items"]
    completed = page_built.completed

    async def racing(driver: Driver, found: list[Row], *, ready: Any) -> list[Row]:
        async with context.db.unit_of_work("system:test") as session:
            for message_id, content in ((three, "three, later"), (one, "one, later")):
                await session.execute(
                    update(Message).where(Message.id == message_id).values(content=content)
                )
            await session.execute(delete_rows(RoomEvent).where(RoomEvent.message_id == two))
            await session.execute(delete_rows(Message).where(Message.id == two))
        return await completed(driver, found, ready=ready)

    monkeypatch.setattr(page_built, "completed", racing)
    response = await client.get(f"{ROOMS}/{room}/messages", headers=a)
    monkeypatch.setattr(page_built, "completed", completed)
    shown = [m["id"] for m in response.json()["items"]]
    assert shown == [four, three, one]
    assert [m["content"] for m in response.json()["items"]] == ["four", "three", "one, later"]
    now = orjson.loads(await old_page_bytes(context, {"items": [{"id": one}], "next_cursor": None}))
    expected = [before[0], before[1], now["items"][0]]
    assert response.content == jsonbytes.dumps({"items": expected, "next_cursor": None})


async def test_the_read_by_id_reads_only_the_pages_room(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    """Ids of another room's messages given as this room's page rows: none is read."""
    a = await alice.login(client)
    mine, theirs = await group(client, a), await group(client, a)
    kept = await send(client, a, mine, "mine")
    other = await send(client, a, theirs, "theirs")
    assert (await edit(client, a, other["id"], "theirs, edited")).status_code == 200
    posing = (other["id"], mine, other["seq"], alice.id, "alice", "Alice", None)
    async with reading(context.db.reader) as driver:
        ready = page_built.ready_state(driver)
        shown = await page_built.completed(driver, [posing], ready=ready)
        own = (kept["id"], mine, kept["seq"], alice.id, "alice", "Alice", None)
        assert [row[0] for row in await page_built.completed(driver, [own], ready=ready)] == [
            kept["id"]
        ]
    assert shown == []
