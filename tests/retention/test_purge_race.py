"""A purge racing a reply to a message it removes, on two real MariaDB connections."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.sql.dml import Delete

from cmschat.chat import expiry
from cmschat.chat.models import Message
from cmschat.context import AppContext
from tests.api.test_messages import group, post, send
from tests.support import NamedUser


async def waits_for_its_seq(context: AppContext) -> bool:
    """Whether a send is running its room's seq update (blocked: the purge holds the row).

    The process list, not ``innodb_trx``: MariaDB shows a waiting transaction as running."""
    async with context.db.unit_of_work(read_only=True) as session:
        waiting = await session.scalar(
            text("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE :q"),
            {"q": "UPDATE rooms SET last_seq%"},
        )
    return bool(waiting)


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_reply_racing_the_purge_of_its_parent_keeps_no_stale_tail(
    client: httpx.AsyncClient,
    alice: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The purge has nulled the replies it saw and is about to delete the parent when a
    reply is sent: the reply waits for the purge and is refused (its parent is gone), or,
    without the purge's lock, is stored and then nulled by the foreign key, which runs no
    trigger: its tail would still show ``"reply_to"``."""
    a = await alice.login(client)
    room = await group(client, a)
    parent = await send(client, a, room, "soon purged")
    reply: asyncio.Task[httpx.Response] | None = None

    async with context.db.unit_of_work("system:test") as session:
        execute = session.execute

        async def paused(statement: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal reply
            if isinstance(statement, Delete) and statement.table.name == Message.__tablename__:
                reply = asyncio.create_task(post(client, a, room, "a reply", reply_to=parent["id"]))
                # Until the reply is answered or waits for the purge's locks (its state,
                # polled: no guess at how long it takes).
                while not reply.done() and not await waits_for_its_seq(context):
                    await asyncio.wait([reply], timeout=0.01)
            return await execute(statement, *args, **kwargs)

        monkeypatch.setattr(session, "execute", paused)
        await expiry.delete_messages(
            session, room_id=room, message_ids=[parent["id"]], through_seq=parent["seq"]
        )
    assert reply is not None
    answered = await reply
    async with context.db.unit_of_work(read_only=True) as session:
        stale = await session.scalar(
            text("SELECT COUNT(*) FROM messages WHERE page_tail LIKE :t"),
            {"t": f'%"reply_to":{parent["id"]},%'},
        )
    assert stale == 0
    assert answered.status_code == 422, answered.text
    assert "reply_to must be a message of this room" in answered.text
