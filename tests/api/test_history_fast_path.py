"""History pages and replays skip the ORM and per-row validation, and must not show it.

The fast path builds ``MessageRead``-shaped dicts from Core rows and writes them with
orjson. These tests hold it to what the models would have written, field for field, for
the values that differ most easily (unicode, mentions, replies, files, edits, tombstones,
timestamps), and to a fixed number of statements whatever the page size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event, select

from cmschat.chat.messages.views import message_views
from cmschat.chat.models import Message
from cmschat.chat.schemas import MessagePage
from cmschat.context import AppContext
from tests.api.test_attachments import upload
from tests.api.test_messages import MESSAGES, ROOMS, group, make_user, send
from tests.support import NamedUser

TRICKY = '한국어 검색 😀 "quotes" \\ back\u2028slash <b>bold</b> \x7f @bob'


async def a_room_with_every_kind_of_message(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> tuple[int, dict[str, str]]:
    """A group where alice wrote unicode, a mention, a reply, a file, an edit, a deletion."""
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    first = await send(client, a, room_id, TRICKY)
    await send(client, a, room_id, "a reply", reply_to=first["id"])
    stored = await upload(client, a, room_id, "notes 노트.txt", b"plain text\n")
    assert stored.status_code == 201, stored.text
    await send(client, a, room_id, "", attachment_ids=[stored.json()["id"]])
    edited = await send(client, a, room_id, "before")
    await client.patch(f"{MESSAGES}/{edited['id']}", headers=a, json={"content": "after"})
    gone = await send(client, a, room_id, "to delete")
    assert (await client.delete(f"{MESSAGES}/{gone['id']}", headers=a)).status_code in (200, 204)
    for n in range(6):
        await send(client, a, room_id, f"filler {n}")
    return room_id, a


async def model_page(
    context: AppContext, room_id: int, *, limit: int, before: int | None = None
) -> dict[str, Any]:
    """The page as the pydantic models would write it (the old path)."""
    async with context.db.unit_of_work() as session:
        statement = select(Message).where(Message.room_id == room_id)
        if before is not None:
            statement = statement.where(Message.seq < before)
        rows = list(
            (await session.scalars(statement.order_by(Message.seq.desc()).limit(limit + 1))).all()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        views = await message_views(session, rows)
    page = MessagePage(items=views, next_cursor=rows[-1].seq if more else None)
    result: dict[str, Any] = page.model_dump(mode="json")
    return result


async def test_a_history_page_is_what_the_models_would_write(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    room_id, a = await a_room_with_every_kind_of_message(client, alice, bob)
    first = await client.get(f"{ROOMS}/{room_id}/messages", headers=a, params={"limit": 7})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    body = first.json()
    assert body == await model_page(context, room_id, limit=7)
    assert body["next_cursor"] is not None
    rest = await client.get(
        f"{ROOMS}/{room_id}/messages",
        headers=a,
        params={"limit": 7, "before": body["next_cursor"]},
    )
    assert rest.json() == await model_page(context, room_id, limit=7, before=body["next_cursor"])
    every = body["items"] + rest.json()["items"]
    assert any(m["attachments"] for m in every) and any(m["mentions"] for m in every)
    assert any(m["deleted"] for m in every) and any(m["edited"] for m in every)
    assert any(m["content"] == TRICKY for m in every)
    assert all(m["created_at"].endswith("Z") for m in every)


@contextmanager
def counting_statements(context: AppContext) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = context.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_history_page_costs_the_same_few_statements_whatever_its_size(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    room_id, a = await a_room_with_every_kind_of_message(client, alice, bob)
    counts = []
    for limit in (2, 10):
        with counting_statements(context) as statements:
            response = await client.get(
                f"{ROOMS}/{room_id}/messages", headers=a, params={"limit": limit}
            )
        assert response.status_code == 200 and len(response.json()["items"]) == limit
        counts.append(len(statements))
    # MariaDB reads a page's rows without a stored tail (edited, deleted, with files) in
    # one statement more, however many (chat/messages/page_built.py): the page of 2 has
    # none, the page of 10 has some.
    more = 1 if context.db.engine.dialect.name == "mysql" else 0
    assert counts[1] == counts[0] + more, counts
    # The caller's token, membership, the page with its authors, mentions, files (and
    # SQLite's own BEGIN and COMMIT): the ORM path took one more, for the authors.
    assert counts[1] <= 7, counts


async def test_an_outsider_still_gets_404_from_the_fast_path(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    await send(client, a, room_id, "private")
    outsider = await (await make_user(context, "carol")).login(client)
    response = await client.get(f"{ROOMS}/{room_id}/messages", headers=outsider)
    assert response.status_code == 404
    assert "private" not in response.text
