"""A send batch's fixed cost: the trips to the driver of a one-send batch.

On SQLite every call into aiosqlite is a trip to its thread (a queue put, a thread wake-up,
a round through the event loop); a batch's seq numbering, message insert and the rows that
follow (events, mentions, search rows) share one (``Driver.steps``). On MariaDB every
command written to the server is a round trip; the statements of a ``Driver.steps`` whose
parameters are known share one multi-statement query (``db/mariadb_trips.py``).

Sharing a trip keeps the batch whole: a statement failing inside a shared trip rolls back
what ran before it, nothing after it runs, and each send is then retried on its own.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import asyncmy.connection
import pytest
from asyncmy.constants.COMMAND import COM_QUERY
from sqlalchemy import event, func, select, text

from cmschat.accounts.models import User
from cmschat.audit import chain
from cmschat.audit.models import AuditEvent
from cmschat.chat import search_index
from cmschat.chat.messages import batch_sql
from cmschat.chat.models import EventType, Mention, Message, RoomEvent
from cmschat.chat.schemas import MessageCreate
from cmschat.context import AppContext
from cmschat.db.driver_sql import Statement
from tests.api.test_messages import group
from tests.support import NamedUser

TRIPS = {"sqlite": 2, "mysql": 5}
"""Trips of a warm one-send batch with a client id and a mention: SQLite's calls into
aiosqlite (BEGIN IMMEDIATE, the repeat check and the mention lookup in one; then seq
numbering, message insert, event, mention and search row, the audit head, the audit event,
the head's move and the COMMIT in one); MariaDB's round trips to the server (the repeat
check and the mention lookup in one; numbering and the message insert in one; event,
mention, search row and the audit head in one; the audit event and the head's move in one;
COMMIT). The writer keeps its connection between batches (``db/writer.py``): no pool
pre-ping before, no reset after."""
TRIPS_BEFORE = {"sqlite": (13, 8, 6, 5, 4, 3), "mysql": (14, 8, 7)}
"""The same before ``Driver.steps`` (SQLite's numbering took two trips, the message insert
one, the rows after the messages three), then before the audit append took one trip
(``audit/append.py``; it took three: head, insert, head update), then before the BEGIN went
with the first statement (``write_lock``; it took a trip of its own), then before the batch's
audit events went in its store trip (``batch_audit``; they took one of their own), then
before the mention lookup went with the repeat check (``batch_reads``), then before the
COMMIT went with the store's statements (``WriterTransaction.steps_then_commit``). On
MariaDB, before the statements of a ``Driver.steps`` shared round trips
(``db/mariadb_trips.py``): one each; then before the message insert numbered the seqs
itself (``message_insert.numbered``: the rooms' ``last_seq`` read between the update and
the insert took a round trip); then before the writer kept its connection (the pool's
pre-ping and reset took one each)."""
MARIADB_TRIPS = [
    "SELECT;SELECT",
    "UPDATE;INSERT",
    "INSERT;INSERT;INSERT;SELECT",
    "INSERT;UPDATE",
    "COMMIT",
]


@contextmanager
def trips_of(context: AppContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What each trip to the driver inside the block was: on SQLite the function sent to
    aiosqlite's thread, on MariaDB the first word of each statement of a command sent."""
    seen: list[str] = []
    if context.db.engine.dialect.name == "sqlite":
        real = aiosqlite.Connection._execute

        async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(getattr(fn, "__name__", repr(fn)))
            return await real(self, fn, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(aiosqlite.Connection, "_execute", counted)
            yield seen
        return
    sent = asyncmy.connection.Connection._execute_command

    async def command(self: Any, kind: int, sql: Any) -> Any:
        # Every command written to the server is a round trip: a query (one statement or
        # several), COMMIT and ROLLBACK among them, or the pool's pre-ping.
        if kind == COM_QUERY:
            text = sql.decode() if isinstance(sql, bytes) else sql
            seen.append(";".join(part.split(None, 1)[0] for part in text.split(";")))
        else:
            seen.append(f"command {kind}")
        return await sent(self, kind, sql)

    with monkeypatch.context() as patch:
        patch.setattr(asyncmy.connection.Connection, "_execute_command", command)
        yield seen


async def sender_of(context: AppContext, user: NamedUser) -> User:
    async with context.db.unit_of_work() as session:
        found = await session.get(User, user.id)
    assert found is not None
    return found


async def test_a_one_send_batch_takes_fewer_trips_to_the_driver(
    client: Any,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    for n in range(2):  # the second is warm (caches, compiled statements)
        with trips_of(context, monkeypatch) as trips:
            view, created = await context.sends.send(
                user=sender,
                room_id=room,
                draft=MessageCreate(content=f"hi @bob {n}", client_id=f"c{n}"),
            )
        assert created and view.data["mentions"] == [bob.id]
    dialect = context.db.engine.dialect.name
    print(f"\n{len(trips)} trips:", trips)
    assert len(trips) == TRIPS[dialect], trips
    if dialect == "sqlite":
        assert len(trips) == TRIPS_BEFORE[dialect][1] - 6
        assert trips == ["_run_steps", "_run_steps"]
    else:
        assert trips == MARIADB_TRIPS
    async with context.db.unit_of_work() as session:
        seqs = (await session.scalars(select(Message.seq).where(Message.room_id == room))).all()
        assert max(seqs) - min(seqs) == 1 and len(seqs) == 2  # gap-free
        assert await session.scalar(select(func.count()).select_from(Mention)) == 2
        chained = select(AuditEvent.target_id).where(AuditEvent.action == "message.created")
        assert len((await session.scalars(chained)).all()) == 2
        assert (await chain.verify(session)).ok


async def test_a_one_send_batch_starts_no_task_but_its_writer(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    """The writer's unit of work commits and closes in the writer's task: closing through
    ``AsyncSession``'s exit took a task of its own (and two turns of the event loop)."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    started: list[str] = []
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        started.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    for n in range(2):  # the second is warm
        started.clear()
        loop.set_task_factory(counting)
        try:
            _view, created = await context.sends.send(
                user=sender, room_id=room, draft=MessageCreate(content=f"hi {n}", client_id=f"t{n}")
            )
        finally:
            loop.set_task_factory(factory)
        assert created
    assert started == ["GroupCommit._write_all"]


async def test_a_batch_leaves_no_garbage_for_the_cycle_collector(
    client: Any, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    """What a batch made is freed when it ends: a reference cycle per batch (a closure over
    the object holding it) kept its rows alive until a collection, whose traversals then
    cost a 64-send batch ~0.3 M instructions per send (callgrind)."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)

    async def batch(tag: str) -> None:
        sends = [
            context.sends.send(
                user=sender,
                room_id=room,
                draft=MessageCreate(content=f"hi @bob {n}", client_id=f"{tag}{n}"),
            )
            for n in range(8)
        ]
        assert all(created for _view, created in await asyncio.gather(*sends))

    await batch("warm")
    gc.collect()
    gc.disable()
    try:
        await batch("g")
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_a_statement_failing_inside_a_shared_trip_rolls_back_the_batch(
    client: Any,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    # The mentions' insert, between the events' and the search rows' in the same trip,
    # fails in the database; each send on its own (``send_message``) does not use it.
    broken = Statement(lambda _dialect: text("INSERT INTO no_such_table VALUES (1)"), [])
    monkeypatch.setattr(batch_sql, "_MENTIONS", broken)
    ran: list[str] = []
    engine = context.db.engine.sync_engine

    def seen(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        ran.append(sql)

    event.listen(engine, "before_cursor_execute", seen)
    batches = context.sends.batches
    try:
        view, created = await context.sends.send(
            user=sender, room_id=room, draft=MessageCreate(content="hi @bob", client_id="x")
        )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert created and view.data["mentions"] == [bob.id]
    assert context.sends.batches == batches  # the batch failed, the send went alone
    assert any("no_such_table" in sql for sql in ran)
    async with context.db.unit_of_work() as session:
        # One message, one event, one search row: what the failed batch wrote before the
        # failing statement was rolled back with it.
        assert (await session.scalars(select(Message.id))).all() == [view.data["id"]]
        events = select(RoomEvent.message_id).where(RoomEvent.type == EventType.message_created)
        assert (await session.scalars(events)).all() == [view.data["id"]]
        indexed = select(func.count()).select_from(search_index.index_table(session))
        assert await session.scalar(indexed) == 1
        # Its audit event too: the failed batch's, chained in the same trip, never ran.
        chained = select(AuditEvent.target_id).where(AuditEvent.action == "message.created")
        assert (await session.scalars(chained)).all() == [str(view.data["id"])]
        assert (await chain.verify(session)).ok


async def test_a_full_batch_over_several_rooms_takes_as_many_round_trips_as_one_send(
    client: Any,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On MariaDB the rooms' seq updates (one statement per room) and the rows of 64 sends
    share the round trips of a one-send batch."""
    token = await alice.login(client)
    rooms = [await group(client, token, bob) for _ in range(4)]
    sender = await sender_of(context, alice)

    async def batch(tag: str) -> tuple[int, list[str]]:
        batches = context.sends.batches
        with trips_of(context, monkeypatch) as trips:
            sends = [
                context.sends.send(
                    user=sender,
                    room_id=rooms[n % len(rooms)],
                    draft=MessageCreate(content=f"hi @bob {n}", client_id=f"{tag}{n}"),
                )
                for n in range(64)
            ]
            assert all(created for _view, created in await asyncio.gather(*sends))
        return context.sends.batches - batches, trips

    await batch("warm")
    batches, trips = await batch("full")
    print(f"\n{batches} batches, {len(trips)} trips:", trips)
    if context.db.engine.dialect.name == "mysql":
        assert batches == 1
        assert len(trips) == len(MARIADB_TRIPS) == TRIPS["mysql"]  # was 17: 14 and 3 rooms more
        assert trips[1] == "UPDATE;" * len(rooms) + "INSERT"
