"""Messages kept written as JSON between pages (``chat/messages/page_memo.py``): a page
always shows its rows as they are now, whatever changed them and whether or not their
``updated_at`` moved, byte for byte what the old serialisation writes."""

from __future__ import annotations

import httpx
from sqlalchemy import Table, delete, select, update

from cmschat.accounts.models import User
from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.chat.messages.page_memo import ENTRY_OVERHEAD, ItemMemo
from cmschat.chat.models import Mention, Message
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.api.test_attachments import upload
from tests.api.test_history_bytes import old_page_bytes
from tests.api.test_messages import ROOMS, edit, group, send
from tests.api.test_messages import delete as delete_message
from tests.support import NamedUser

MESSAGES: Table = Message.__table__  # type: ignore[assignment]
ATTACHMENTS: Table = Attachment.__table__  # type: ignore[assignment]
MENTIONS: Table = Mention.__table__  # type: ignore[assignment]
USERS: Table = User.__table__  # type: ignore[assignment]


async def page_of(
    client: httpx.AsyncClient, context: AppContext, url: str, headers: dict[str, str]
) -> dict[int, dict[str, object]]:
    """The page by message id, checked against the old serialisation."""
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.content == await old_page_bytes(context, response.json())
    return {item["id"]: item for item in response.json()["items"]}


async def test_a_page_shows_every_change_of_a_row_even_when_updated_at_stays(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob)
    plain = await send(client, a, room, "one")
    stored = await upload(client, a, room, "a.txt", b"text\n")
    assert stored.status_code == 201, stored.text
    filed = await send(client, a, room, "file", attachment_ids=[stored.json()["id"]])
    mentioning = await send(client, a, room, "hi @bob")
    reply = await send(client, a, room, "re", reply_to=plain["id"])
    url = f"{ROOMS}/{room}/messages"
    before = await page_of(client, context, url, a)
    assert before[filed["id"]]["attachments"] and before[mentioning["id"]]["mentions"] == [bob.id]
    await page_of(client, context, url, a)  # now written from the memo

    # Core statements on the tables: nothing stamps updated_at, no event is published.
    async with context.db.unit_of_work("system:test") as session:
        stamps = dict((await session.execute(select(MESSAGES.c.id, MESSAGES.c.updated_at))).all())
        await session.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id == plain["id"])
            .values(content="changed", content_html="<p>changed</p>")
        )
        await session.execute(
            update(ATTACHMENTS)
            .where(ATTACHMENTS.c.id == stored.json()["id"])
            .values(state=AttachmentState.deleting)
        )
        await session.execute(delete(MENTIONS).where(MENTIONS.c.message_id == mentioning["id"]))
        await session.execute(
            update(MESSAGES).where(MESSAGES.c.id == reply["id"]).values(reply_to_id=None)
        )
        await session.execute(
            update(USERS).where(USERS.c.id == alice.id).values(display_name="Alice Renamed")
        )
    async with context.db.unit_of_work("system:test", read_only=True) as session:
        after = dict((await session.execute(select(MESSAGES.c.id, MESSAGES.c.updated_at))).all())
    assert after == stamps

    shown = await page_of(client, context, url, a)
    assert shown[plain["id"]]["content"] == "changed"
    assert shown[plain["id"]]["content_html"] == "<p>changed</p>"
    assert shown[filed["id"]]["attachments"] == []
    assert shown[mentioning["id"]]["mentions"] == []
    assert shown[reply["id"]]["reply_to"] is None
    assert {item["author"]["display_name"] for item in shown.values()} == {"Alice Renamed"}  # type: ignore[index]


async def test_edits_and_a_delete_at_one_instant_each_show_on_the_next_page(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext, clock: FakeClock
) -> None:
    # The clock stands still: the message's updated_at and edited_at stay the same
    # through the second edit; only its text tells the versions apart.
    a = await alice.login(client)
    room = await group(client, a)
    message = await send(client, a, room, "first")
    url = f"{ROOMS}/{room}/messages"
    assert (await page_of(client, context, url, a))[message["id"]]["content"] == "first"
    for text in ("second", "third"):
        assert (await edit(client, a, message["id"], text)).status_code == 200
        shown = (await page_of(client, context, url, a))[message["id"]]
        assert shown["content"] == text and shown["edited"] is True
    assert (await delete_message(client, a, message["id"])).status_code in (200, 204)
    gone = (await page_of(client, context, url, a))[message["id"]]
    assert gone["deleted"] is True and gone["content"] == "" and gone["content_html"] == ""


def test_the_memo_keeps_to_its_budget_and_keeps_what_is_used() -> None:
    entry = ENTRY_OVERHEAD + 10
    memo = ItemMemo(budget=2 * 3 * entry)  # three entries per generation
    for n in range(3):
        memo.keep(n, (n, "text"), b"t" * 10, 0)
    assert memo.tail(0, (0, "text")) == b"t" * 10
    assert memo.tail(0, (0, "other text")) is None  # another version of the row
    memo.keep(3, (3, "text"), b"t" * 10, 0)  # past half the budget: 0-3 are the old ones
    memo.keep(0, (0, "text"), b"t" * 10, 0)  # used again: young
    for n in (4, 5, 6):
        memo.keep(n, (n, "text"), b"t" * 10, 0)  # past half again: 1-3 dropped
    assert [n for n in range(7) if memo.tail(n, (n, "text"))] == [0, 4, 5, 6]
    assert memo.used <= 2 * 3 * entry
    memo.keep(5, (5, "edited"), b"t" * 10, 0)  # the new version replaces the old
    assert memo.tail(5, (5, "text")) is None and memo.tail(5, (5, "edited")) is not None
    memo.keep(7, (7, "text"), b"t" * 10_000, 0)  # larger than a generation: not kept
    assert memo.tail(7, (7, "text")) is None
