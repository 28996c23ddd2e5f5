"""A SQLite write transaction's ``BEGIN IMMEDIATE`` travels with its first statement.

It is one trip to the driver's thread and one statement execution fewer per write
transaction, and still what it was: an IMMEDIATE transaction (another process cannot write
once the first statement ran), announced to the cursor events and timed for the SQL
metrics. A transaction that runs nothing sends nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event, text

from cmschat.clock import FakeClock
from cmschat.db import driver_sql, write_lock
from cmschat.db.session import Database, create_engine


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'begin.db'}")
    database = Database(engine, FakeClock())
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function sent to a driver thread, in order."""
    sent: list[str] = []
    original: Any = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return sent


def _other_writer(path: Path) -> sqlite3.Connection:
    """A connection of "another process": its own, not the engine's pool or lock."""
    return sqlite3.connect(path, timeout=0, isolation_level=None)


async def test_begin_goes_with_the_first_statement_and_is_immediate(
    db: Database, tmp_path: Path, trips: list[str]
) -> None:
    announced: list[str] = []
    timed: list[str] = []

    def seen(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        announced.append(sql)

    dialect = db.engine.sync_engine.dialect
    setattr(
        dialect,
        driver_sql._OBSERVER,
        (lambda sql, _s: timed.append(sql), lambda sql, _s, _e: timed.append(f"failed {sql}")),
    )
    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    other = _other_writer(tmp_path / "begin.db")
    try:
        async with db.unit_of_work() as session:
            rows = (await session.execute(text("SELECT count(*) FROM t"))).all()
            assert rows == [(0,)]
            # IMMEDIATE: the write lock is ours from the first statement, read or not.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await session.execute(text("INSERT INTO t (who) VALUES ('a')"))
    finally:
        other.close()
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
        delattr(dialect, driver_sql._OBSERVER)
    # Before: BEGIN IMMEDIATE, the SELECT, the INSERT and the COMMIT were four trips.
    assert trips == ["_run", "_run", "commit"]
    assert announced[0] == write_lock.BEGIN_WRITE
    assert write_lock.BEGIN_WRITE in timed
    async with db.unit_of_work(read_only=True) as session:
        assert (await session.scalars(text("SELECT who FROM t"))).all() == ["a"]


async def test_a_write_transaction_that_runs_nothing_sends_nothing(
    db: Database, tmp_path: Path, trips: list[str]
) -> None:
    async with db.unit_of_work() as session:
        await session.connection()  # begun: the lock is taken, the BEGIN deferred
        lock = write_lock.lock_of(db.engine)
        assert lock is not None and lock.holder is not None
    assert trips == []
    assert lock.holder is None
    # Nothing was left pending on the pooled connection: the next transaction is whole.
    other = _other_writer(tmp_path / "begin.db")
    try:
        other.execute("BEGIN IMMEDIATE")  # nobody holds SQLite's lock
        other.execute("ROLLBACK")
        async with db.unit_of_work() as session:
            await session.execute(text("INSERT INTO t (who) VALUES ('b')"))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


async def test_a_begin_that_cannot_start_fails_its_statement_and_frees_the_lock(
    db: Database, tmp_path: Path
) -> None:
    other = _other_writer(tmp_path / "begin.db")
    try:
        async with db.engine.connect() as connection:
            await connection.exec_driver_sql("PRAGMA busy_timeout=0")
            await connection.commit()
            # Another process writes: our BEGIN IMMEDIATE finds SQLite's lock taken.
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(Exception, match="locked"):
                await connection.execute(text("INSERT INTO t (who) VALUES ('c')"))
            await connection.rollback()
            lock = write_lock.lock_of(db.engine)
            assert lock is not None and lock.holder is None
            other.execute("ROLLBACK")
            await connection.execute(text("INSERT INTO t (who) VALUES ('d')"))
            await connection.commit()
    finally:
        other.close()
    async with db.unit_of_work(read_only=True) as session:
        assert (await session.scalars(text("SELECT who FROM t"))).all() == ["d"]


async def test_a_trip_cancelled_before_its_begin_ran_leaves_no_transaction_behind(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's task is cancelled (client gone, shutdown) while its first statement
    waits in the driver's queue: the thread still runs that trip, BEGIN included, after the
    unit of work has rolled back. The rollback must follow it there, or the pooled
    connection keeps an open write transaction: SQLite locked for every other writer, and
    a kept reader serving the row that was never committed."""
    gate = threading.Event()
    queued = asyncio.Event()
    original: Any = aiosqlite.Connection._execute

    async def held(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "__name__", "") == "_run_steps" and not queued.is_set():
            # The thread is busy with something else until the test opens the gate.
            self._tx.put_nowait((asyncio.get_running_loop().create_future(), gate.wait))
            queued.set()
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", held)
    insert = driver_sql.Statement(lambda _dialect: text("INSERT INTO t (who) VALUES ('gone')"), ())

    async def request() -> None:
        async with db.unit_of_work("user:1") as session:
            driver = await driver_sql.driver_of(session)
            await driver.steps([(insert, (), False)])

    task = asyncio.create_task(request())
    await asyncio.wait_for(queued.wait(), timeout=10)
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)

    async def everything(driver: driver_sql.Driver) -> list[Any]:
        return await driver.rows(driver_sql.Statement(lambda _d: text("SELECT who FROM t"), ()), ())

    async with db.readers.reading(everything) as (_driver, seen):
        assert seen == []
    async with db.unit_of_work("user:2") as session:
        await session.execute(text("INSERT INTO t (who) VALUES ('next')"))
    other = _other_writer(tmp_path / "begin.db")
    try:
        other.execute("BEGIN IMMEDIATE")  # nothing holds SQLite's lock
        other.execute("ROLLBACK")
        assert other.execute("SELECT who FROM t").fetchall() == [("next",)]
    finally:
        other.close()
