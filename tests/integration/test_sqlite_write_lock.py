"""SQLite's writers queue on an in-process FIFO lock; readers never wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cmschat.clock import FakeClock
from cmschat.db import write_lock
from cmschat.db.session import Database, create_engine
from cmschat.db.write_lock import NestedWriteError, WriteLockTimeout

WAIT = 5.0


BUSY_AFTER = 0.5
"""The write lock's time-out in the test that waits for it; the others wait far longer, so
that a slow machine queuing writers one loop turn at a time never times one out."""


@pytest.fixture
def lock_timeout() -> float:
    return 4 * WAIT


@pytest.fixture
async def db(tmp_path: Path, lock_timeout: float) -> AsyncIterator[Database]:
    engine = create_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'lock.db'}", write_lock_timeout=lock_timeout
    )
    database = Database(engine, FakeClock())
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
    yield database
    await database.dispose()


async def _rows(db: Database) -> list[str]:
    async with db.unit_of_work(read_only=True) as session:
        return list((await session.scalars(text("SELECT who FROM t ORDER BY id"))).all())


async def in_line(lock: write_lock.WriteLock, count: int) -> None:
    """Return once ``count`` transactions wait for the lock (checked at every loop turn)."""
    while lock.waiting < count:  # noqa: ASYNC110 - a turn of the loop at a time, bounded by the caller
        await asyncio.sleep(0)


async def test_writers_commit_in_arrival_order(db: Database) -> None:
    held = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with db.unit_of_work() as session:
            await session.execute(text("INSERT INTO t (who) VALUES ('first')"))
            held.set()
            await release.wait()

    async def writer(name: str) -> None:
        async with db.unit_of_work() as session:
            await session.execute(text("INSERT INTO t (who) VALUES (:who)"), {"who": name})

    lock = write_lock.lock_of(db.engine)
    assert lock is not None
    holder = asyncio.create_task(first())
    await asyncio.wait_for(held.wait(), WAIT)
    waiting = []
    for count, name in enumerate(("a", "b", "c", "d"), start=1):
        waiting.append(asyncio.create_task(writer(name)))
        await asyncio.wait_for(in_line(lock, count), WAIT)  # queued before the next arrives
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, *waiting), WAIT)
    assert await _rows(db) == ["first", "a", "b", "c", "d"]


async def test_readers_are_not_blocked_by_an_open_write(db: Database) -> None:
    async with db.unit_of_work() as session:
        await session.execute(text("INSERT INTO t (who) VALUES ('uncommitted')"))
        # Well within the lock's 0.5 s bound: a reader that waited would time out.
        assert await asyncio.wait_for(_rows(db), WAIT) == []
    assert await _rows(db) == ["uncommitted"]


@pytest.mark.parametrize("lock_timeout", [BUSY_AFTER])
async def test_a_writer_that_waits_too_long_gets_a_busy_error(db: Database) -> None:
    async with db.unit_of_work() as session:
        await session.execute(text("INSERT INTO t (who) VALUES ('slow')"))

        async def late() -> None:
            async with db.unit_of_work() as other:
                await other.execute(text("INSERT INTO t (who) VALUES ('late')"))

        with pytest.raises(WriteLockTimeout, match="busy"):
            await asyncio.wait_for(asyncio.create_task(late()), WAIT)
    # The timed-out waiter left the line: the next writer goes straight through.
    async with db.unit_of_work() as session:
        await session.execute(text("INSERT INTO t (who) VALUES ('next')"))
    assert await _rows(db) == ["slow", "next"]


async def test_a_nested_write_in_the_same_task_fails_at_once(db: Database) -> None:
    async with db.unit_of_work() as session:
        await session.execute(text("INSERT INTO t (who) VALUES ('outer')"))
        with pytest.raises(NestedWriteError):
            async with db.unit_of_work() as inner:
                await inner.execute(text("INSERT INTO t (who) VALUES ('inner')"))
        # A nested reader is fine.
        assert await _rows(db) == []
    assert await _rows(db) == ["outer"]


async def test_a_cancelled_writer_frees_the_lock(db: Database) -> None:
    held = asyncio.Event()

    async def stuck() -> None:
        async with db.unit_of_work() as session:
            await session.execute(text("INSERT INTO t (who) VALUES ('cancelled')"))
            held.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await asyncio.wait_for(held.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.unit_of_work() as session:
        await session.execute(text("INSERT INTO t (who) VALUES ('after')"))
    assert await _rows(db) == ["after"]
