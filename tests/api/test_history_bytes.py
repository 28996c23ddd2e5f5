"""History pages read on a bare pooled connection and written straight to bytes
(``chat/messages/page_json.py``, ``api.deps.reading_signed_in``): byte for byte what the
``MessageRead`` dicts serialised with ``jsonbytes`` were, and refused as before (no token,
a revoked, expired or disabled one, not a member, a password to change).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text, update

from cmschat import jsonbytes
from cmschat.accounts.models import AuthToken, User
from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.chat.messages import reads, rows
from cmschat.chat.models import Mention, Message
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.driver_sql import Statement
from cmschat.db.readers import reading
from cmschat.db.write_lock import ReadOnlyWrite
from tests.api.test_attachments import upload
from tests.api.test_messages import ROOMS, carol, delete, edit, group, make_user, send
from tests.support import NamedUser

__all__ = ["carol"]  # a fixture

TRICKY = '한국어 😀 "quotes" \\ back\u2028slash\t<b>bold</b> \x7f\x01 @bob'


async def old_page_bytes(context: AppContext, body: dict[str, Any]) -> bytes:
    """The page the response names, as the dicts read through SQLAlchemy and written with
    ``jsonbytes`` would be (what history pages were before ``page_json``)."""
    ids = [item["id"] for item in body["items"]]
    async with context.db.unit_of_work(read_only=True) as session:
        by_id = {view["id"]: view for view in await rows.messages_by_id(session, ids)}
    return jsonbytes.dumps({"items": [by_id[i] for i in ids], "next_cursor": body["next_cursor"]})


async def test_a_page_is_the_old_serialisation_byte_for_byte(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    context: AppContext,
    clock: FakeClock,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob, carol)
    first = await send(client, a, room, TRICKY)  # on a whole second: no microseconds
    clock.advance(seconds=1.25)
    await send(client, a, room, "to @carol and @bob, not @nobody")  # two mentions, in id order
    await send(client, a, room, "a reply", reply_to=first["id"])
    for name in ("notes 노트.txt", "b.txt"):
        stored = await upload(client, a, room, name, b"plain text\n")
        assert stored.status_code == 201, stored.text
        await send(client, a, room, f"file {name}", attachment_ids=[stored.json()["id"]])
    edited = await send(client, a, room, "typo")
    gone = await send(client, a, room, "oops @bob")
    clock.advance(minutes=1, microseconds=7)
    assert (await edit(client, a, edited["id"], "fixed")).status_code == 200
    assert (await delete(client, a, gone["id"])).status_code in (200, 204)
    await send(client, await bob.login(client), room, "from bob")

    url = f"{ROOMS}/{room}/messages"
    newest = await client.get(url, headers=a, params={"limit": 4})
    older = await client.get(url, headers=a, params={"before": newest.json()["next_cursor"]})
    after = await client.get(url, headers=a, params={"after": first["seq"], "limit": 3})
    for response in (newest, older, after):
        assert response.status_code == 200, response.text
        assert response.content == await old_page_bytes(context, response.json())
    shown = newest.json()["items"] + older.json()["items"]
    assert newest.json()["next_cursor"] is not None and older.json()["next_cursor"] is None
    assert [m["seq"] for m in after.json()["items"]] == [first["seq"] + n for n in (3, 2, 1)]
    kinds = {m["content"]: m for m in shown}
    assert kinds[TRICKY]["created_at"].endswith(":00Z")  # no ".000000"
    assert kinds["to @carol and @bob, not @nobody"]["mentions"] == sorted([bob.id, carol.id])
    assert kinds["to @carol and @bob, not @nobody"]["created_at"].endswith(".250000Z")
    assert kinds["file b.txt"]["attachments"][0]["filename"] == "b.txt"
    assert kinds["fixed"]["edited"] and kinds["fixed"]["updated_at"] != kinds["fixed"]["created_at"]
    assert any(m["deleted"] and m["mentions"] == [] for m in shown)
    assert kinds["from bob"]["author"]["username"] == "bob"


EVERY_CONTROL = "".join(map(chr, range(32))) + '\x7f\u2028 \\ " / é'


async def test_rows_the_api_never_writes_are_the_old_serialisation_too(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    context: AppContext,
) -> None:
    """Every control character (NUL too), an author gone, mentions stored out of id order,
    two ready files (an image) beside one still uploading, microseconds with trailing zeros."""
    a = await alice.login(client)
    room = await group(client, a, bob, carol)
    plain = await send(client, a, room, "plain")
    files = await send(client, a, room, "files")
    ids = []
    for name in ("z.txt", "a.txt", "pending.txt"):
        stored = await upload(client, a, room, name, b"bytes\n")
        assert stored.status_code == 201, stored.text
        ids.append(stored.json()["id"])
    at = datetime(2026, 5, 4, 3, 2, 1, 120000, tzinfo=UTC)
    async with context.db.unit_of_work("system:test") as session:
        await session.execute(
            update(Message)
            .where(Message.id == plain["id"])
            .values(
                content=EVERY_CONTROL,
                content_html=EVERY_CONTROL,
                author_id=None,
                created_at=at,
                updated_at=at + timedelta(microseconds=1),
            )
        )
        for user in (carol, bob):  # the higher id first
            session.add(
                Mention(message_id=plain["id"], user_id=user.id, room_id=room, seq=plain["seq"])
            )
        await session.execute(
            update(Attachment)
            .where(Attachment.id.in_(ids[:2]))
            .values(message_id=files["id"], state=AttachmentState.ready)
        )
        await session.execute(
            update(Attachment).where(Attachment.id == ids[0]).values(is_image=True)
        )
        await session.execute(
            update(Attachment)
            .where(Attachment.id == ids[2])
            .values(message_id=files["id"], state=AttachmentState.uploading)
        )
    response = await client.get(f"{ROOMS}/{room}/messages", headers=a)
    assert response.status_code == 200, response.text
    assert response.content == await old_page_bytes(context, response.json())
    shown = {m["id"]: m for m in response.json()["items"]}
    assert shown[plain["id"]]["content"] == EVERY_CONTROL
    assert shown[plain["id"]]["author"] is None
    assert shown[plain["id"]]["mentions"] == sorted([bob.id, carol.id])
    assert shown[plain["id"]]["created_at"] == "2026-05-04T03:02:01.120000Z"
    assert [f["id"] for f in shown[files["id"]]["attachments"]] == sorted(ids[:2])
    assert [f["is_image"] for f in shown[files["id"]]["attachments"]] == [True, False]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_writes_an_older_page_itself_as_one_row(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    """On SQLite an older page (the newest, or one before a cursor) is one row: how many
    messages, the oldest one's seq, whether older ones remain, and the messages' JSON texts
    joined by SQLite, newest first. No Python code writes a message, and the driver steps
    once, whatever the page's size."""
    a = await alice.login(client)
    room = await group(client, a)
    first, second, third = [await send(client, a, room, text) for text in ("1", "2", "3")]

    async def row(before: int | None, limit: int) -> tuple[object, ...]:
        async with reading(context.db.reader) as driver:
            statement, parameters = reads.page_read(
                driver, room_id=room, before=before, after=None, limit=limit
            )
            (found,) = await driver.rows(statement, parameters)
        return tuple(found)

    def joined(*sent: dict[str, object]) -> str:
        return ",".join(orjson.dumps(message).decode() for message in sent)

    assert await row(None, 2) == (2, second["seq"], 1, joined(third, second))
    assert await row(second["seq"], 50) == (1, first["seq"], 0, joined(first))
    assert await row(None, 3) == (3, first["seq"], 0, joined(third, second, first))
    assert (await row(first["seq"], 50))[:3] == (0, None, 0)


async def test_every_refusal_of_a_page_is_at_once(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    context: AppContext,
    clock: FakeClock,
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await group(client, a, bob)
    await send(client, a, room, "private")
    url = f"{ROOMS}/{room}/messages"
    assert (await client.get(url, headers=b)).status_code == 200

    def code(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]["code"]

    # Not a member: 404, the room's existence not confirmed; nothing of it shown.
    outsider = await client.get(url, headers=await carol.login(client))
    assert code(outsider) == (404, "not_found") and "private" not in outsider.text
    changing = await make_user(context, "changing", must_change=True)
    forced = await client.get(url, headers=await changing.login(client))
    assert code(forced) == (403, "password_change_required")
    assert code(await client.get(url)) == (401, "not_authenticated")

    # Logged out: the very next page is refused, the other session still reads.
    other = await bob.login(client)
    assert (await client.post("/api/v1/auth/logout", headers=b)).status_code == 204
    assert code(await client.get(url, headers=b)) == (401, "invalid_token")
    assert (await client.get(url, headers=other)).status_code == 200
    # Disabled without its tokens revoked (a row changed behind the server's back).
    async with context.db.unit_of_work("system:test") as session:
        await session.execute(update(User).where(User.id == bob.id).values(is_active=False))
    assert code(await client.get(url, headers=other)) == (401, "invalid_token")
    # Idle past the limit.
    clock.advance(days=30)
    assert code(await client.get(url, headers=a)) == (401, "invalid_token")


async def test_a_page_past_the_refresh_interval_stores_the_tokens_last_use(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    a = await alice.login(client)
    room = await group(client, a)
    await send(client, a, room, "hi")
    clock.advance(minutes=5)
    response = await client.get(f"{ROOMS}/{room}/messages", headers=a)
    assert response.status_code == 200
    assert [m["content"] for m in response.json()["items"]] == ["hi"]
    async with context.db.unit_of_work("system:test", read_only=True) as session:
        used = await session.scalar(
            select(AuthToken.last_used_at).where(AuthToken.user_id == alice.id)
        )
    assert used == clock.now()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_pooled_reading_connection_refuses_a_write(context: AppContext) -> None:
    rename = Statement(lambda _dialect: text("UPDATE rooms SET name = 'x'"), [])
    with pytest.raises(ReadOnlyWrite, match="read-only"):
        async with reading(context.db.reader) as driver:
            await driver.rows(rename, ())


async def test_a_page_without_its_database_is_a_503(
    unreachable_database: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await unreachable_database.get(
        f"{ROOMS}/1/messages", headers={"Authorization": "Bearer some-token"}
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
