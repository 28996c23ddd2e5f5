"""The group commit's writer: its transactions on a kept connection, without an ORM session.

A lone send's batch paid for an ``AsyncSession``, a pooled connection's checkout and checkin
and SQLAlchemy's session transaction (``db/writer.py``). A warm batch now uses none of them;
what it still guarantees is tested in test_group_commit.py and test_batch_trips.py, and here:
the SQLite write lock waited for in line, a connection the server dropped given back.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncmy.connection
import asyncmy.errors
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from cmschat.audit import chain
from cmschat.chat.models import Message
from cmschat.chat.schemas import MessageCreate
from cmschat.context import AppContext
from cmschat.db import sqlite_driver, write_lock
from cmschat.db.actors import SYSTEM_SENDER
from cmschat.observability import outages
from tests.api.test_messages import group
from tests.integration.test_batch_trips import sender_of
from tests.support import NamedUser


@contextmanager
def counted(context: AppContext) -> Iterator[dict[str, int]]:
    """ORM session transactions begun and pooled connections checked out in the block."""
    seen = {"sessions": 0, "checkouts": 0}

    def session(*_args: Any) -> None:
        seen["sessions"] += 1

    def checkout(*_args: Any) -> None:
        seen["checkouts"] += 1

    pool = context.db.engine.sync_engine.pool
    event.listen(Session, "after_transaction_create", session)
    event.listen(pool, "checkout", checkout)
    try:
        yield seen
    finally:
        event.remove(Session, "after_transaction_create", session)
        event.remove(pool, "checkout", checkout)


async def stored(context: AppContext) -> list[str]:
    """Every stored message's content, in seq order."""
    async with context.db.unit_of_work() as session:
        return list(await session.scalars(select(Message.content).order_by(Message.seq)))


async def test_a_warm_batch_opens_no_orm_session_and_checks_out_no_connection(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    for n in range(3):  # the first checks the writer's connection out; then it is kept
        with counted(context) as seen:
            _view, created = await context.sends.send(
                user=sender,
                room_id=room,
                draft=MessageCreate(content=f"hi @bob {n}", client_id=f"w{n}"),
            )
        assert created
    assert seen == {"sessions": 0, "checkouts": 0}
    async with context.db.unit_of_work() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 3
        assert (await chain.verify(session)).ok


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_writer_waits_in_line_for_the_sqlite_write_lock(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    lock = write_lock.lock_of(context.db.engine)
    assert lock is not None
    # Warm: the writer's connection kept, the membership cached (no trip before the lock).
    await context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="warm"))
    holding = asyncio.Event()
    release = asyncio.Event()

    async def other_writer() -> None:
        async with context.db.unit_of_work(SYSTEM_SENDER) as session:
            await session.execute(text("UPDATE rooms SET last_seq = last_seq WHERE id = 0"))
            holding.set()
            await release.wait()

    holder = asyncio.create_task(other_writer())
    await holding.wait()
    send = asyncio.create_task(
        context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="queued"))
    )
    for _ in range(20):
        await asyncio.sleep(0)  # turns of the loop, not time: the send cannot get further
    assert not send.done() and lock.waiting == 1
    release.set()
    await holder
    view, created = await send
    assert created and view.data["content"] == "queued"
    assert lock.holder is None  # freed at the commit, the connection kept
    # Another writer takes it again at once.
    async with context.db.unit_of_work(SYSTEM_SENDER) as session:
        await session.execute(text("UPDATE rooms SET last_seq = last_seq WHERE id = 0"))


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_writer_connection_the_server_dropped_is_given_back(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)

    async def send(content: str) -> None:
        _view, created = await context.sends.send(
            user=sender, room_id=room, draft=MessageCreate(content=content)
        )
        assert created

    async def writer_id() -> int:
        connection = await context.db.writer.connection()
        found = int((await connection.execute(text("SELECT CONNECTION_ID()"))).scalar_one())
        await connection.rollback()
        return found

    await send("before")
    killed = await writer_id()
    async with context.db.engine.connect() as other:
        await other.execute(text(f"KILL CONNECTION {killed}"))
    await send("after the kill")  # its batch fails on the dead connection; sent on its own
    await send("next")  # a batch of its own again, on a connection checked out anew
    assert await writer_id() != killed
    assert await stored(context) == ["before", "after the kill", "next"]


async def test_a_batch_with_rare_reads_joins_them_to_its_transaction(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    """A repeated client id (its stored message read as ORM objects), a reply (its parent's
    room read with a Core statement) and a membership not cached yet, in one batch: read in
    the batch's transaction, which then commits through SQLAlchemy, the lock freed."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    first, _ = await context.sends.send(
        user=sender, room_id=room, draft=MessageCreate(content="first", client_id="r1")
    )
    if context.caches is not None:
        context.caches.flush()  # the membership and name read again
    batches = context.sends.batches
    (again, created_again), (reply, created_reply) = await asyncio.gather(
        context.sends.send(
            user=sender, room_id=room, draft=MessageCreate(content="first", client_id="r1")
        ),
        context.sends.send(
            user=sender,
            room_id=room,
            draft=MessageCreate(content="a reply", reply_to=first.data["id"]),
        ),
    )
    assert context.sends.batches - batches == 1
    assert not created_again and again.data["id"] == first.data["id"]
    assert created_reply and reply.data["reply_to"] == first.data["id"]
    assert reply.data["seq"] == first.data["seq"] + 1
    lock = write_lock.lock_of(context.db.engine)
    assert lock is None or lock.holder is None
    async with context.db.unit_of_work() as session:
        assert (await chain.verify(session)).ok


@contextmanager
def commit_lost_on_the_way(context: AppContext) -> Iterator[list[int]]:
    """The next driver COMMIT reaches the server and commits, then its answer is lost: the
    driver raises as it does when the connection breaks at that moment. On SQLite the
    batch's COMMIT runs in its store trip (``sqlite_driver.commit_in_thread``)."""
    raised: list[int] = []
    if context.db.engine.dialect.name == "sqlite":
        real_in_thread = sqlite_driver.commit_in_thread

        def in_thread(connection: sqlite3.Connection) -> None:
            real_in_thread(connection)
            if not raised:
                raised.append(1)
                raise sqlite3.OperationalError("disk I/O error")

        sqlite_driver.commit_in_thread = in_thread
        try:
            yield raised
        finally:
            sqlite_driver.commit_in_thread = real_in_thread
        return
    owner: Any = asyncmy.connection.Connection
    failure = asyncmy.errors.OperationalError(2013, "Lost connection to server during query")
    real = owner.commit

    async def commit(self: Any) -> None:
        await real(self)
        if not raised:
            raised.append(1)
            raise failure

    owner.commit = commit
    try:
        yield raised
    finally:
        owner.commit = real


async def test_a_batch_whose_commit_failed_on_the_way_is_not_sent_again(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    """The COMMIT was sent and no answer came: the batch may be stored, so sending each
    message again on its own could store it twice (no client id to find it by). Each sender
    is told the database failed, as an outage (503 or 507, never a 500), and nothing is
    stored twice; the next send works on a fresh connection."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    await context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="warm"))
    with commit_lost_on_the_way(context) as raised:
        answers = await asyncio.gather(
            *(
                context.sends.send(
                    user=sender, room_id=room, draft=MessageCreate(content=f"lost {n}")
                )
                for n in range(3)
            ),
            return_exceptions=True,
        )
    assert raised == [1]
    for answer in answers:
        assert isinstance(answer, Exception), answer
        assert outages.classify(answer) is not None, repr(answer)
    _view, created = await context.sends.send(
        user=sender, room_id=room, draft=MessageCreate(content="next")
    )
    assert created
    assert sorted(await stored(context)) == ["lost 0", "lost 1", "lost 2", "next", "warm"]
    async with context.db.unit_of_work() as session:
        assert (await chain.verify(session)).ok


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_commit_refused_in_the_store_trip_rolls_back_and_sends_each_alone(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    """SQLite (the only one whose COMMIT goes in the store's trip) refused the COMMIT that
    went with the batch's statements, the transaction still open (nothing stored): the
    outcome is known, so the batch is rolled back and each send written on its own, every
    sender answered with its message, none stored twice."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    await context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="warm"))
    refused: list[int] = []
    real_in_thread = sqlite_driver.commit_in_thread

    def in_thread(connection: sqlite3.Connection) -> None:
        if not refused:
            refused.append(1)
            raise sqlite3.OperationalError("database is locked")
        real_in_thread(connection)

    sqlite_driver.commit_in_thread = in_thread
    try:
        answers = await asyncio.gather(
            *(
                context.sends.send(user=sender, room_id=room, draft=MessageCreate(content=f"a{n}"))
                for n in range(3)
            )
        )
    finally:
        sqlite_driver.commit_in_thread = real_in_thread
    assert refused == [1]
    assert all(created for _view, created in answers)
    assert sorted(await stored(context)) == ["a0", "a1", "a2", "warm"]
    lock = write_lock.lock_of(context.db.engine)
    assert lock is not None and lock.holder is None
    async with context.db.unit_of_work() as session:
        assert (await chain.verify(session)).ok


async def test_a_failure_after_the_commit_answers_the_senders_and_sends_nothing_again(
    client: Any,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever fails once the batch has committed (here the publisher itself) is logged:
    the senders are answered with their stored messages, none is written a second time."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    await context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="warm"))

    async def broken_publisher(_events: Any) -> None:
        raise RuntimeError("publisher broke")

    monkeypatch.setattr(context.db, "publisher", broken_publisher)
    answers = await asyncio.gather(
        *(
            context.sends.send(user=sender, room_id=room, draft=MessageCreate(content=f"m{n}"))
            for n in range(2)
        )
    )
    assert all(created for _view, created in answers)
    assert sorted(await stored(context)) == ["m0", "m1", "warm"]


async def test_the_writer_runs_one_transaction_at_a_time(context: AppContext) -> None:
    async with context.db.writer_unit_of_work(SYSTEM_SENDER) as first:
        await first.driver()
        second = context.db.writer_unit_of_work(SYSTEM_SENDER)
        with pytest.raises(RuntimeError, match="one transaction at a time"):
            async with second:
                await second.driver()
    # The first ended well and freed the writer for the next.
    async with context.db.writer_unit_of_work(SYSTEM_SENDER) as third:
        await third.driver()
