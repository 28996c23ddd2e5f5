"""Group commit: concurrent sends share transactions, and each still gets its own answer.

Sixty-four senders at once, some repeating each other's client ids, must come out as one
gap-free run of seqs per room with every client id stored once; a send that fails its checks
fails alone; a batch that cannot commit stores nothing and answers every sender.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from cmschat.accounts.models import User
from cmschat.chat import search_index
from cmschat.chat.messages import batch_sql, batch_writes, sending
from cmschat.chat.messages.views import message_views
from cmschat.chat.models import Message, RoomEvent
from cmschat.chat.schemas import MessageCreate
from cmschat.context import AppContext
from cmschat.errors import Invalid, NotFound
from tests.api.test_messages import ROOMS, group, make_user
from tests.support import NamedUser

SENDERS = 64


async def test_64_concurrent_senders_with_repeated_client_ids(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    rooms = [await group(client, a, bob) for _ in range(3)]
    # 64 sends: 48 distinct client ids, 16 of them sent twice (a retry racing its original).
    plan = [(rooms[n % 3], a if n % 2 else b, f"c{n % 48}-{n % 2}", f"text {n}") for n in range(64)]
    batches = context.sends.batches

    async def send(room: int, headers: dict[str, str], client_id: str, text: str) -> Any:
        response = await client.post(
            f"{ROOMS}/{room}/messages",
            headers=headers,
            json={"content": text, "client_id": client_id},
        )
        assert response.status_code in (200, 201), response.text
        return response.status_code, response.json()

    answers = await asyncio.gather(*(send(*step) for step in plan))
    by_key: dict[tuple[int, str], set[int]] = {}
    for (room, _h, client_id, _t), (_status, message) in zip(plan, answers, strict=True):
        assert message["room_id"] == room
        by_key.setdefault((room, client_id), set()).add(message["id"])
    # Each (room, client id) got one message, the same for the original and its retry.
    assert all(len(ids) == 1 for ids in by_key.values())
    statuses = Counter(status for status, _m in answers)
    assert statuses[201] == len(by_key) and statuses[200] == SENDERS - len(by_key)
    async with context.db.unit_of_work() as session:
        for room in rooms:
            seqs = (
                await session.scalars(
                    select(Message.seq).where(Message.room_id == room).order_by(Message.seq)
                )
            ).all()
            events = await session.scalar(
                select(func.count()).select_from(RoomEvent).where(RoomEvent.room_id == room)
            )
            created = sum(1 for (r, _c) in by_key if r == room)
            # The room's own events (creation, members) come first; the messages follow.
            assert list(seqs) == list(range(seqs[0], seqs[0] + created))
            assert events == seqs[-1]
        stored = await session.scalar(select(func.count()).select_from(Message))
    assert stored == len(by_key)
    # Fewer transactions than messages: sends that arrived together were written together.
    # (Each request also commits its sign-in check, a transaction of its own.)
    assert context.sends.batches - batches < len(by_key) // 2, context.sends.batches
    # Written as batches, not each send on its own after its batch failed.
    assert "sends failed" not in caplog.text


async def test_a_bad_send_fails_alone_in_its_batch(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room, other = await group(client, a, bob), await group(client, a, bob)
    elsewhere = (
        await client.post(f"{ROOMS}/{other}/messages", headers=a, json={"content": "there"})
    ).json()
    carol = await make_user(context, "carol")
    async with context.db.unit_of_work() as session:
        sender, outsider = await session.get(User, alice.id), await session.get(User, carol.id)
    assert sender is not None and outsider is not None
    batches = context.sends.batches

    def send(user: User, **body: Any) -> Any:
        return context.sends.send(user=user, room_id=room, draft=MessageCreate(**body))

    # Queued in the same turn of the loop: one batch.
    good, bad_reply, too_long, stranger, empty = await asyncio.gather(
        send(sender, content="fine"),
        send(sender, content="reply", reply_to=elsewhere["id"]),
        send(sender, content="x" * (context.settings.chat.max_message_length + 1)),
        send(outsider, content="let me in"),
        send(sender, content="   "),
        return_exceptions=True,
    )
    assert context.sends.batches - batches == 1
    assert good[0].data["content"] == "fine" and good[1] is True
    assert isinstance(bad_reply, Invalid) and bad_reply.field == "reply_to"
    assert isinstance(too_long, Invalid) and too_long.code == "too_long"
    assert isinstance(stranger, NotFound)
    assert isinstance(empty, Invalid)
    history = (await client.get(f"{ROOMS}/{room}/messages", headers=a)).json()["items"]
    assert [m["content"] for m in history] == ["fine"]


async def test_a_batch_that_cannot_commit_stores_nothing_and_answers_everyone(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob)

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the search index is gone")

    monkeypatch.setattr(batch_sql, "store", broken)  # the batch's
    monkeypatch.setattr(search_index, "index_message", broken)  # each send's on its own
    answers = await asyncio.gather(
        *(
            client.post(f"{ROOMS}/{room}/messages", headers=a, json={"content": f"m{n}"})
            for n in range(8)
        )
    )
    assert [answer.status_code for answer in answers] == [500] * 8
    async with context.db.unit_of_work() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_the_sender_is_answered_only_after_the_commit(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob)
    batch: list[Any] = []
    # At each commit of the batch's transaction (the engine's event, fired before the
    # COMMIT, in the store's trip on SQLite or at the end of the unit of work on MariaDB):
    # whether its sender was answered already.
    answered_at_commit: list[list[bool]] = []
    event.listen(
        context.db.engine.sync_engine,
        "commit",
        lambda _conn: batch and answered_at_commit.append([p.future.done() for p in batch]),
    )
    real = batch_writes.write_batch

    async def watched(session: Any, **kwargs: Any) -> Any:
        batch.extend(kwargs["batch"])
        return await real(session, **kwargs)

    monkeypatch.setattr(batch_writes, "write_batch", watched)
    response = await client.post(f"{ROOMS}/{room}/messages", headers=a, json={"content": "hi"})
    assert response.status_code == 201
    assert answered_at_commit == [[False]]
    assert all(p.future.done() for p in batch)


async def test_mentions_in_a_batch_are_those_of_each_send_alone(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    carol = await make_user(context, "carol")
    with_bob, with_carol = await group(client, a, bob), await group(client, a, carol)
    async with context.db.unit_of_work() as session:
        sender = await session.get(User, alice.id)
    assert sender is not None
    plan = [
        (with_bob, "hi @bob and @carol"),
        (with_carol, "hi @bob and @carol"),
        (with_bob, "no one here"),
        (with_carol, "`@carol` in code, @Carol and @nobody outside"),
        (with_carol, "@carol @carol twice"),
    ]
    async with context.db.unit_of_work() as session:
        alone = [await sending.render_content(session, room, text) for room, text in plan]
    batches = context.sends.batches
    lookups: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "JOIN room_members" in statement and "username IN" in statement:
            lookups.append(statement)

    event.listen(context.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        answers = await asyncio.gather(
            *(
                context.sends.send(user=sender, room_id=room, draft=MessageCreate(content=text))
                for room, text in plan
            )
        )
    finally:
        event.remove(context.db.engine.sync_engine, "before_cursor_execute", seen)
    assert context.sends.batches - batches == 1
    assert len(lookups) == 1  # the mentioned members of the whole batch, in one query
    assert [(view.data["content_html"], view.data["mentions"]) for view, _new in answers] == alone
    assert [view.data["mentions"] for view, _new in answers] == [
        [bob.id],
        [carol.id],
        [],
        [carol.id],
        [carol.id],
    ]


async def test_a_sender_that_goes_away_leaves_its_batch_whole(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob)
    async with context.db.unit_of_work() as session:
        sender = await session.get(User, alice.id)
    assert sender is not None
    writing, release = asyncio.Event(), asyncio.Event()
    real = batch_writes.write_batch

    async def held(session: Any, **kwargs: Any) -> Any:
        writing.set()
        await release.wait()
        return await real(session, **kwargs)

    monkeypatch.setattr(batch_writes, "write_batch", held)
    gone, stays = (
        asyncio.create_task(
            context.sends.send(user=sender, room_id=room, draft=MessageCreate(content=text))
        )
        for text in ("gone", "stays")
    )
    await asyncio.wait_for(writing.wait(), timeout=10)
    gone.cancel()
    release.set()
    sent, created = await asyncio.wait_for(stays, timeout=10)
    assert created and sent.data["content"] == "stays"
    with pytest.raises(asyncio.CancelledError):
        await gone
    later, _ = await asyncio.wait_for(
        context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="later")),
        timeout=10,
    )
    history = (await client.get(f"{ROOMS}/{room}/messages", headers=a)).json()["items"]
    assert [m["content"] for m in history] == ["later", "stays", "gone"]
    assert [m["seq"] for m in history] == [
        later.data["seq"],
        sent.data["seq"],
        sent.data["seq"] - 1,
    ]


async def test_a_send_written_alone_after_its_batch_failed_answers_the_same_bytes(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await alice.login(client)
    room = await group(client, a, bob)

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the batch could not be written")

    monkeypatch.setattr(batch_writes, "write_batch", broken)
    body = {"content": "alone, @bob", "client_id": "alone-1"}
    answer = await client.post(f"{ROOMS}/{room}/messages", headers=a, json=body)
    assert answer.status_code == 201, answer.text
    async with context.db.unit_of_work() as session:
        stored = (await session.scalars(select(Message).where(Message.room_id == room))).one()
        (view,) = await message_views(session, [stored])
    assert answer.content == view.model_dump_json().encode()
    assert answer.json()["mentions"] == [bob.id]
