"""Each message's history tail stored at its send (``messages.page_tail``,
``chat/messages/page_tail.py``): a page serves it, byte for byte the old serialisation,
and every later change of what it shows clears it in the same transaction (migration
0010's triggers), while a rename clears nothing (the author is not in it).
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import bindparam, text

from cmschat.chat import expiry
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.api.test_attachments import upload
from tests.api.test_history_bytes import EVERY_CONTROL, TRICKY, old_page_bytes
from tests.api.test_messages import ROOMS, carol, delete, edit, group, send
from tests.support import NamedUser

__all__ = ["carol"]  # a fixture


async def tails(context: AppContext, *ids: int) -> dict[int, str | None]:
    """The stored tails of these messages, by id."""
    async with context.db.unit_of_work(read_only=True) as session:
        found = await session.execute(
            text("SELECT id, page_tail FROM messages WHERE id IN :ids").bindparams(
                bindparam("ids", list(ids), expanding=True)
            )
        )
    return {message_id: tail for message_id, tail in found}


async def hand_sql(context: AppContext, statement: str, **values: Any) -> None:
    """One statement, as a DBA would run it."""
    async with context.db.unit_of_work("system:test") as session:
        await session.execute(text(statement), values)


async def page_of(client: httpx.AsyncClient, headers: dict[str, str], room: int) -> httpx.Response:
    response = await client.get(f"{ROOMS}/{room}/messages", headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_a_send_stores_the_tail_the_page_would_build(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    context: AppContext,
    clock: FakeClock,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob, carol)
    tricky = await send(client, a, room, TRICKY)
    clock.advance(seconds=1.25)
    controls = await send(client, a, room, EVERY_CONTROL.replace("\x00", ""))
    mentions = await send(client, a, room, "to @carol and @bob, not @nobody")
    reply = await send(client, a, room, "a reply **bold**", reply_to=tricky["id"])
    stored = await upload(client, a, room, "notes.txt", b"plain text\n")
    assert stored.status_code == 201, stored.text
    filed = await send(client, a, room, "a file", attachment_ids=[stored.json()["id"]])
    plain = (tricky, controls, mentions, reply)
    found = await tails(context, *(m["id"] for m in (*plain, filed)))
    assert all(found[m["id"]] for m in plain)
    assert found[filed["id"]] is None  # a send with files stores none: built by the page
    listed = ",".join(str(user_id) for user_id in sorted([bob.id, carol.id]))
    assert f'"mentions":[{listed}]' in str(found[mentions["id"]])

    served = await page_of(client, a, room)
    assert served.content == await old_page_bytes(context, served.json())
    # Each stored tail is what the page builds without it.
    await hand_sql(context, "UPDATE messages SET page_tail = NULL")
    assert (await page_of(client, a, room)).content == served.content
    items = {m["id"]: m for m in served.json()["items"]}
    assert items[reply["id"]]["reply_to"] == tricky["id"]
    assert items[mentions["id"]]["mentions"] == sorted([bob.id, carol.id])
    assert items[tricky["id"]]["content"] == TRICKY


async def test_a_stored_tail_is_served(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room = await group(client, a)
    sent = await send(client, a, room, "the real text")
    marker = (
        '"content":"marker","content_html":"marker","reply_to":null,"mentions":[],'
        '"created_at":"2026-01-01T09:00:00Z","updated_at":"2026-01-01T09:00:00Z",'
        '"edited":false,"deleted":false,"attachments":[]}'
    )
    # An update that sets the tail itself keeps it (the triggers clear only the others).
    await hand_sql(
        context, "UPDATE messages SET page_tail = :t WHERE id = :i", t=marker, i=sent["id"]
    )
    (item,) = (await page_of(client, a, room)).json()["items"]
    assert item["content"] == "marker" and item["author"]["username"] == "alice"


async def test_every_change_it_shows_clears_the_tail(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    context: AppContext,
    clock: FakeClock,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob, carol)
    parent = await send(client, a, room, "the parent")
    changed = {
        name: await send(client, a, room, f"{name} @bob", **extra)
        for name, extra in (
            ("edited", {}),
            ("deleted", {}),
            ("hand", {}),
            ("reply", {"reply_to": parent["id"]}),
            ("unmentioned", {}),
            ("mentioned", {}),
            ("filed", {}),
        )
    }
    kept = await send(client, a, room, "untouched @bob")
    ids = [m["id"] for m in changed.values()]
    assert all((await tails(context, *ids, kept["id"])).values())
    clock.advance(minutes=1)

    assert (await edit(client, a, changed["edited"]["id"], "fixed @carol")).status_code == 200
    assert (await delete(client, a, changed["deleted"]["id"])).status_code in (200, 204)
    await hand_sql(
        context,
        "UPDATE messages SET content_html = '<p>by hand</p>' WHERE id = :i",
        i=changed["hand"]["id"],
    )
    async with context.db.unit_of_work("system:test") as session:  # a retention purge's part
        await expiry.delete_messages(
            session, room_id=room, message_ids=[parent["id"]], through_seq=parent["seq"]
        )
    await hand_sql(
        context,
        "DELETE FROM mentions WHERE message_id = :i",
        i=changed["unmentioned"]["id"],
    )
    # Its rows named, not read from messages: MariaDB refuses a statement whose trigger
    # updates a table the statement reads (error 1442; docs/operations.md).
    mentioned = changed["mentioned"]
    await hand_sql(
        context,
        "INSERT INTO mentions (message_id, user_id, room_id, seq, created_at, created_by,"
        " updated_at, updated_by) VALUES (:i, :u, :r, :s, :at, 'dba', :at, 'dba')",
        i=mentioned["id"],
        u=carol.id,
        r=room,
        s=mentioned["seq"],
        at=clock.now().replace(tzinfo=None),
    )
    uploaded = await upload(client, a, room, "late.txt", b"late\n")
    assert uploaded.status_code == 201, uploaded.text
    await hand_sql(
        context,
        "UPDATE attachments SET message_id = :m, state = 'ready' WHERE id = :f",
        m=changed["filed"]["id"],
        f=uploaded.json()["id"],
    )

    found = await tails(context, *ids, kept["id"])
    assert {name: found[m["id"]] for name, m in changed.items()} == dict.fromkeys(changed)
    assert found[kept["id"]] is not None  # only the changed rows
    served = await page_of(client, a, room)
    assert served.content == await old_page_bytes(context, served.json())
    items = {m["id"]: m for m in served.json()["items"]}
    assert items[changed["edited"]["id"]]["content"] == "fixed @carol"
    assert (
        items[changed["deleted"]["id"]]["content"] == ""
        and items[changed["deleted"]["id"]]["deleted"]
    )
    assert items[changed["reply"]["id"]]["reply_to"] is None
    assert items[changed["unmentioned"]["id"]]["mentions"] == []
    assert items[changed["mentioned"]["id"]]["mentions"] == sorted([bob.id, carol.id])
    assert [f["filename"] for f in items[changed["filed"]["id"]]["attachments"]] == ["late.txt"]


async def test_a_rename_clears_nothing_and_shows(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room = await group(client, a)
    sent = await send(client, a, room, "hello")
    await hand_sql(
        context, "UPDATE users SET display_name = 'Alice Renamed' WHERE id = :u", u=alice.id
    )
    assert (await tails(context, sent["id"]))[sent["id"]] is not None
    served = await page_of(client, a, room)
    assert served.json()["items"][0]["author"]["display_name"] == "Alice Renamed"
    assert served.content == await old_page_bytes(context, served.json())


async def test_a_deleted_user_leaves_no_tail_mentioning_them(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
    context: AppContext,
) -> None:
    """Their mentions go by the foreign key's cascade, which InnoDB runs without triggers:
    MariaDB's users trigger clears the tails first; SQLite's key actions fire the
    mentions' own."""
    a = await alice.login(client)
    room = await group(client, a, bob, carol)
    sent = await send(client, a, room, "for @carol and @bob")
    other = await send(client, a, room, "for @bob only")
    await hand_sql(context, "DELETE FROM room_members WHERE user_id = :u", u=carol.id)
    await hand_sql(context, "DELETE FROM users WHERE id = :u", u=carol.id)
    found = await tails(context, sent["id"], other["id"])
    assert found[sent["id"]] is None and found[other["id"]] is not None
    served = await page_of(client, a, room)
    assert served.content == await old_page_bytes(context, served.json())
    items = {m["id"]: m for m in served.json()["items"]}
    assert items[sent["id"]]["mentions"] == [bob.id]
