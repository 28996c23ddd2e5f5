"""History pages read with the driver (``db.driver_sql``) answer what SQLAlchemy's read of
the same messages answers: authors, mentions, replies, files, edits, tombstones, times."""

from __future__ import annotations

import json

import httpx

from cmschat import jsonbytes
from cmschat.chat.messages import rows
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.api.test_attachments import upload
from tests.api.test_messages import delete, edit, group, page, send
from tests.support import NamedUser


async def test_a_page_read_with_the_driver_is_the_orm_read_of_its_messages(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    clock: FakeClock,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob)
    first = await send(client, a, room, "plain")
    clock.advance(seconds=1.5)
    await send(client, a, room, "hi @bob, not @nobody")
    await send(client, a, room, "a reply", reply_to=first["id"])
    file = (await upload(client, a, room, "notes.txt", b"some notes")).json()
    await send(client, a, room, "", attachment_ids=[file["id"]])
    edited = await send(client, a, room, "typo")
    gone = await send(client, a, room, "oops")
    clock.advance(minutes=1)
    assert (await edit(client, a, edited["id"], "fixed")).status_code == 200
    assert (await delete(client, a, gone["id"])).status_code in (200, 204)

    newest = (await page(client, a, room, limit=4))["items"]
    older = (await page(client, a, room, before=newest[-1]["seq"], limit=50))["items"]
    after = (await page(client, a, room, after=first["seq"], limit=3))["items"]
    shown = newest + older
    async with context.db.unit_of_work(read_only=True) as session:
        by_orm = {
            view["id"]: json.loads(jsonbytes.dumps(view))
            for view in await rows.messages_by_id(session, [m["id"] for m in shown])
        }
    assert shown == [by_orm[m["id"]] for m in shown]
    assert after == [by_orm[m["id"]] for m in after]
    assert [m["seq"] for m in after] == [first["seq"] + n for n in (3, 2, 1)]  # newest first
    kinds = {m["content"]: m for m in shown}
    assert kinds["hi @bob, not @nobody"]["mentions"] == [bob.id]
    assert kinds[""]["attachments"][0]["is_image"] is False
    assert kinds["fixed"]["edited"] and kinds["fixed"]["updated_at"] != kinds["fixed"]["created_at"]
    assert any(m["deleted"] for m in shown)
