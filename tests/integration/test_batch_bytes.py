"""A batch takes sends up to a byte budget: long sends split into several commits, each
sender answered once, nothing stored twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from cmschat.chat.messages import group_commit
from cmschat.chat.models import Message
from cmschat.chat.schemas import MessageCreate
from cmschat.context import AppContext
from tests.api.test_messages import group
from tests.integration.test_batch_trips import sender_of
from tests.observability.metrics_support import value
from tests.support import NamedUser

LONG = "\N{GRINNING FACE}" * 1000
"""4,000 bytes of UTF-8; its JSON, HTML and hex tail make a row of ~24 KB."""


@pytest.mark.parametrize("database_url", ["sqlite", "mariadb"], indirect=True)
async def test_long_sends_split_into_batches_by_their_bytes(
    client: Any, alice: NamedUser, context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = await group(client, await alice.login(client))
    sender = await sender_of(context, alice)
    writes: list[int] = []
    write = group_commit.GroupCommit._write

    async def counted(self: group_commit.GroupCommit, batch: list[Any]) -> None:
        writes.append(len(batch))
        await write(self, batch)

    monkeypatch.setattr(group_commit.GroupCommit, "_write", counted)
    # Room for two of these sends, not three (each weighs ~24 KB).
    monkeypatch.setattr(context.sends, "max_bytes", 60_000, raising=False)
    before = context.sends.batches
    batches = value("cmschat_send_batches_total")
    answers = await asyncio.gather(
        *(
            context.sends.send(
                user=sender,
                room_id=room,
                draft=MessageCreate(content=f"{LONG} {n}", client_id=f"long{n}"),
            )
            for n in range(7)
        )
    )
    assert writes == [2, 2, 2, 1]  # all seven queued before the writer ran
    assert context.sends.batches - before == 4
    assert value("cmschat_send_batches_total") == batches + 4  # operators see the same
    assert [created for _sent, created in answers] == [True] * 7
    ids = {sent.data["id"] for sent, _created in answers}
    async with context.db.unit_of_work(read_only=True) as session:
        stored = await session.scalar(
            select(func.count()).select_from(Message).where(Message.room_id == room)
        )
        contents = set((await session.scalars(select(Message.content))).all())
    assert len(ids) == 7 and stored == 7
    assert contents == {f"{LONG} {n}" for n in range(7)}


def test_the_first_send_is_taken_whatever_its_size() -> None:
    """A send alone over the budget still goes (as one batch of one), never waits forever."""

    class Heavy:
        prepared = type("P", (), {"content_json": b"x" * 100, "html_json": b""})()

    queue: list[Any] = [Heavy(), Heavy(), Heavy()]
    assert group_commit._taken(queue, 256, 10) == 1
    assert group_commit._taken(queue, 256, 600) == 2
    assert group_commit._taken(queue, 2, 10_000) == 2
    assert group_commit._taken(queue, 256, 10_000) == 3
