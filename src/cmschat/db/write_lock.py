"""SQLite's one writer, queued in the application instead of in SQLite's busy handler.

SQLite lets one transaction write at a time. Left to SQLite, waiting writers sleep in the
busy handler (polls up to 100 ms apart, in no order) and give up with "database is locked"
after ``busy_timeout``. Here every write transaction of an engine first takes a FIFO
asyncio lock, then begins ``IMMEDIATE``; so in-process writers queue in arrival order, wake
the moment the previous one commits, and SQLite's busy handler is left to writers of other
processes (the CLI while the server runs). Read-only units of work begin ``DEFERRED`` and
take no lock: in WAL mode readers never wait for the writer.

The lock is held from ``BEGIN`` until the connection commits, rolls back, is invalidated or
closed. A wait has a bound: past it the transaction fails with ``WriteLockTimeout``, which
the transports answer like any busy database (503 ``database_busy`` with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections import deque
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from cmschat.db import driver_sql
from cmschat.db.sqlite_driver import OneTripConnection

BEGIN_WRITE = "BEGIN IMMEDIATE"
READ_ONLY_OPTION = "cmschat_read_only"
"""Execution option of an engine whose transactions only read (no lock, ``DEFERRED``)."""


class WriteLockTimeout(sqlite3.OperationalError):
    """Waited too long for the write lock; a temporary outage, not a bug."""


class NestedWriteError(RuntimeError):
    """A task that holds the write lock began a second write transaction (a deadlock)."""


class ReadOnlyWrite(RuntimeError):
    """A read-only unit of work tried to write: on SQLite it would bypass the writers' queue."""


READING_STATEMENTS = (
    "SELECT",
    "WITH",
    "PRAGMA",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
)
"""What a read-only transaction may send (``WITH``: the ``SELECT``s it prefixes here)."""


class WriteLock:
    """A FIFO lock held by one connection at a time, with a bounded wait."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._holder: object | None = None
        self._task: asyncio.Task[Any] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """How many transactions wait in line."""
        return sum(not waiter.done() for waiter in self._waiters)

    @property
    def holder(self) -> object | None:
        """The connection holding the lock, if any."""
        return self._holder

    async def acquire(self, holder: object) -> None:
        """Wait in line for the lock, then hold it for ``holder``."""
        task = asyncio.current_task()
        if self._holder is not None and task is not None and task is self._task:
            # The outer transaction would wait for this one to finish, and this one for it.
            raise NestedWriteError(
                "this task already holds SQLite's write lock: a nested write unit of work "
                "would wait for itself; finish the outer one first"
            )
        if self._holder is None and not self._waiters:
            self._take(holder, task)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.timeout)
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self._wake_next()  # handed over just as the wait ended: pass it on
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise WriteLockTimeout(
                    f"database is busy: waited {self.timeout:g} s for the write lock"
                ) from None
            raise
        self._take(holder, task)

    def try_acquire(self, holder: object) -> bool:
        """Hold the lock for ``holder`` at once if it is free and nobody waits; False: wait
        in line with ``acquire``. No coroutine, so no switch out of SQLAlchemy's async
        bridge, when there is nobody to wait for (every write of a quiet instance)."""
        if self._holder is not None or self._waiters:
            return False
        self._take(holder, asyncio.current_task())
        return True

    def release(self, holder: object) -> None:
        """Let the next waiter in, if ``holder`` holds the lock (else nothing)."""
        if holder is None or self._holder is not holder:
            return
        self._holder = None
        self._task = None
        self._wake_next()

    def _take(self, holder: object, task: asyncio.Task[Any] | None) -> None:
        self._holder = holder
        self._task = task

    def _wake_next(self) -> None:
        self._holder = None
        self._task = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # Reserved for the woken waiter until it takes it in ``acquire``.
                self._holder = waiter
                waiter.set_result(None)
                return


def defer_begin(connection: Connection, adapter: OneTripConnection) -> None:
    """``BEGIN IMMEDIATE`` sent in the trip of the transaction's first statement (one trip
    and one statement execution fewer per write transaction). It is still announced to the
    cursor events now, and timed for the statement observer when it runs; another process's
    writer is then waited for (busy_timeout) by that first statement's trip."""
    events = connection.dispatch
    events.before_cursor_execute(connection, None, BEGIN_WRITE, (), None, False)
    events.after_cursor_execute(connection, None, BEGIN_WRITE, (), None, False)
    # The observer the driver path reports to (driver_sql), set by observability's SQL timing.
    observer = getattr(connection.dialect, driver_sql._OBSERVER, None)
    adapter.defer_begin(BEGIN_WRITE, None if observer is None else observer[0])


def _raw(connection: Any) -> Any:
    """The driver's connection, whether given bare or in the pool's proxy."""
    return getattr(connection, "dbapi_connection", connection)


_LOCKS: weakref.WeakKeyDictionary[Engine, WriteLock] = weakref.WeakKeyDictionary()


def lock_of(engine: AsyncEngine) -> WriteLock | None:
    """The write lock installed on ``engine`` (None: not SQLite)."""
    return _LOCKS.get(engine.sync_engine)


def install(engine: AsyncEngine, *, timeout: float) -> WriteLock:
    """Serialise the write transactions of ``engine`` (SQLite) on one in-process lock."""
    lock = WriteLock(timeout)
    sync_engine = engine.sync_engine
    _LOCKS[sync_engine] = lock
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _only_reads(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Upgrading a DEFERRED transaction to a writer would wait in SQLite's busy handler
        # (or fail) instead of the queue: a bug in the caller, refused before it can happen.
        if connection.get_execution_options().get(READ_ONLY_OPTION) and not (
            statement.lstrip()[:9].upper().startswith(READING_STATEMENTS)
        ):
            raise ReadOnlyWrite(f"a read-only unit of work tried to write: {statement[:60]}")

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection = _raw(connection.connection)
        if lock.holder is dbapi_connection:
            # The writer (db/writer.py) began this transaction itself, outside SQLAlchemy's
            # async bridge: the lock held, its BEGIN deferred (or sent already).
            return
        if not lock.try_acquire(dbapi_connection):
            await_only(lock.acquire(dbapi_connection))
        if isinstance(dbapi_connection, OneTripConnection):
            defer_begin(connection, dbapi_connection)
            return
        try:
            # IMMEDIATE: another process's writer is waited for here (busy_timeout), never
            # by a transaction that has already read (it would fail at once to upgrade).
            connection.exec_driver_sql(BEGIN_WRITE)
        except BaseException:
            lock.release(dbapi_connection)
            raise

    def _releasing(method: Any) -> Any:
        def wrapper(dbapi_connection: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(dbapi_connection, *args, **kwargs)
            finally:
                lock.release(_raw(dbapi_connection))

        return wrapper

    # After the commit or rollback itself, not before it (the engine's events come first).
    dialect.do_commit = _releasing(dialect.do_commit)  # type: ignore[method-assign]
    dialect.do_rollback = _releasing(dialect.do_rollback)  # type: ignore[method-assign]

    def _drop(dbapi_connection: Any, *_args: Any) -> None:
        lock.release(_raw(dbapi_connection))

    # A connection lost mid-transaction (cancelled request, closed pool) frees the lock too.
    for name in ("checkin", "invalidate", "close", "close_detached"):
        event.listen(sync_engine.pool, name, _drop)
    return lock
