"""SQLite through aiosqlite, with one trip to the driver's thread per statement (or one
for several: ``run_steps``, for ``driver_sql.Driver.steps``).

aiosqlite runs the sqlite3 connection in a thread of its own; every call is a trip: a
queue put, a thread wake-up, and the event loop woken through its self-pipe with the
answer. SQLAlchemy's adapter makes four trips per statement (open a cursor, execute,
fetch the rows, close the cursor). Measured on this machine: ~400 µs of CPU and over
1 ms of wall time per indexed one-row SELECT, against ~60 µs for one trip and ~55 µs for
the same statement through SQLAlchemy's synchronous pysqlite dialect, so the trips, not
SQLite or SQLAlchemy, were most of what a send or a history page cost on the embedded
default. This adapter does the four steps in one trip. Server-side cursors (results
streamed in chunks) keep SQLAlchemy's own.

It uses aiosqlite's ``Connection._execute`` (queue a function on the driver's thread) and
``Connection._conn`` (the sqlite3 connection, to be touched on that thread only), as
SQLAlchemy's adapter itself does (``_conn``, ``_tx``); ``tests/unit/test_sqlite_driver.py``
fails if they change.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT, await_only

from cmschat.db.steps import Ran, Step, run_each, then_commit

T = TypeVar("T")

__all__ = ["Ran", "Step", "one_trip_dbapi", "run", "run_steps"]

_Outcome = tuple[Any, int, int | None, list[Any] | None, float | None]
"""What one trip brings back: description, rowcount, lastrowid, rows (None: no result set),
and the seconds a deferred ``BEGIN`` took before the statement (None: none ran)."""

Begun = Callable[[str, float], None]
"""Told of a deferred ``BEGIN`` once it ran: its SQL and the seconds it took."""


def _begin(connection: aiosqlite.Connection, begin: str | None) -> float | None:
    """In the driver's thread: the deferred ``BEGIN``, if any, and the seconds it took."""
    if begin is None:
        return None
    started = time.perf_counter()
    connection._conn.execute(begin)
    return time.perf_counter() - started


def _run(
    connection: aiosqlite.Connection,
    operation: str,
    parameters: Any,
    many: bool,
    begin: str | None = None,
) -> _Outcome:
    """In the driver's thread: the deferred ``BEGIN``, a cursor, the statement, its rows,
    the cursor closed."""
    began = _begin(connection, begin)
    cursor: sqlite3.Cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, began
    finally:
        cursor.close()


def commit_in_thread(connection: sqlite3.Connection) -> None:
    """In the driver's thread: the COMMIT of a trip that carries it (a seam for tests)."""
    connection.commit()


def _run_steps(
    connection: aiosqlite.Connection, steps: Sequence[Step], begin: str | None, commit: bool
) -> tuple[Ran, float | None]:
    """In the driver's thread: the deferred ``BEGIN``, then the statements one after the
    other, up to the first error, then the COMMIT if ``commit`` (``then_commit``)."""
    started = time.perf_counter()
    try:
        began = _begin(connection, begin)
    except Exception as error:  # the first statement's error: none of them ran
        return ([], [time.perf_counter() - started], error), None
    ran = run_each(
        steps, lambda sql, parameters, many: _run(connection, sql, parameters, many)[3] or []
    )
    if commit:
        ran = then_commit(ran, lambda: commit_in_thread(connection._conn))
    return ran, began


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement, rows and result facts come back in one trip."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor to open (a trip): the sqlite3 one lives within each statement.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        """The last statement's columns (None when it returned no rows)."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        """The rowid of the last row inserted."""
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        """Rows ``fetchmany()`` returns by default."""
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing to close: the sqlite3 cursor was closed in the statement's trip."""

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._trip(operation, parameters, many=False)
        return self

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._trip(operation, seq_of_parameters, many=True)
        return self

    async def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        adapter = cast(OneTripConnection, self._adapt_connection)
        async with adapter._execute_mutex:
            begin, begun = adapter.take_begin()
            outcome: _Outcome = await adapter.trip(
                _run, self._connection, operation, parameters, many, begin
            )
        self._description, self._rowcount, self._lastrowid, rows, began = outcome
        _tell(begin, begun, began)
        self._rows = collections.deque(rows) if rows is not None else collections.deque()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter, handing out ``OneTripCursor``s.

    A transaction's ``BEGIN`` may be deferred (``defer_begin``): it then runs in the trip
    of the transaction's first statement, in the driver's thread just before it, instead
    of a trip (and a statement execution through SQLAlchemy) of its own. A transaction
    that ends before any statement never sends it: there is nothing to commit.
    """

    __slots__ = ("_begin", "_unsettled")
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: tuple[str, Begun | None] | None = None
        self._unsettled = False
        """A trip carrying a deferred ``BEGIN`` was left without its answer (the task
        awaiting it was cancelled): the driver's thread may still begin the transaction
        after ``in_transaction`` was read, so the next rollback is sent whatever it says."""

    def defer_begin(self, begin: str, begun: Begun | None) -> None:
        """Send ``begin`` with the next statement; ``begun`` is told when it has run."""
        self._begin = (begin, begun)

    def take_begin(self) -> tuple[str | None, Begun | None]:
        """The deferred ``BEGIN`` to send now with a statement (None: none), forgotten here."""
        deferred, self._begin = self._begin, None
        return (None, None) if deferred is None else deferred

    async def trip(self, function: Callable[..., T], *args: Any) -> T:
        """``function`` in the driver's thread; if it carries a deferred ``BEGIN`` and the
        awaiting task is cancelled, the connection is marked unsettled (see ``rollback``)."""
        try:
            result: T = await self._connection._execute(function, *args)
        except asyncio.CancelledError:
            self._unsettled = True
            raise
        return result

    def cursor(self, server_side: bool = False) -> Any:
        """A cursor; a server-side one (SQLAlchemy's own, streaming) runs the deferred
        ``BEGIN`` first, in a trip of its own."""
        if server_side and self._begin is not None:
            begin, begun = self.take_begin()
            began = await_only(self.trip(_begin, self._connection, begin))
            _tell(begin, begun, began)
        return super().cursor(server_side)

    def in_transaction_now(self) -> bool:
        """Whether a transaction is open on this connection now."""
        return self._in_transaction()

    def _in_transaction(self) -> bool:
        # sqlite3 reads this flag (sqlite3_get_autocommit) from any thread; the adapter is
        # used by one task at a time, so no statement of this connection is running now.
        connection = self._connection._connection
        return connection is not None and connection.in_transaction

    def commit(self) -> None:
        """Commit; no trip when no transaction is open (sqlite3 would do nothing), nor when
        its ``BEGIN`` is still deferred (no statement ran in it)."""
        self._begin = None
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        """Roll back; no trip when no transaction is open, as after every commit when the
        pool resets a returned connection. After a cancelled trip the rollback is sent
        anyway: it queues behind that trip in the driver's thread, so a transaction the
        trip began after the cancellation is rolled back, not left open in the pool."""
        self._begin = None
        if self._unsettled or self._in_transaction():
            self._unsettled = False
            super().rollback()

    def close(self) -> None:
        """Close the connection (a deferred ``BEGIN`` with it)."""
        self._begin = None
        super().close()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module the engine is given (``create_async_engine(module=...)``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        """SQLAlchemy's connect (a daemon driver thread), wrapped in the one-trip adapter."""
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock._connection)


def one_trip_dbapi() -> OneTripDbapi:
    """A fresh module object per engine, as SQLAlchemy's dialect makes one per import."""
    return OneTripDbapi(aiosqlite, sqlite3)


async def run(
    adapter: AsyncAdapt_aiosqlite_connection, operation: str, parameters: Any, *, many: bool
) -> list[Any]:
    """A statement straight through the adapter's connection, in one trip: its rows."""
    connection = cast(OneTripConnection, adapter)
    async with adapter._execute_mutex:
        begin, begun = connection.take_begin()
        outcome: _Outcome = await connection.trip(
            _run, adapter._connection, operation, parameters, many, begin
        )
    _tell(begin, begun, outcome[4])
    return outcome[3] or []


async def run_steps(
    adapter: AsyncAdapt_aiosqlite_connection, steps: Sequence[Step], *, commit: bool = False
) -> Ran:
    """Several statements in one trip, in order, stopping at the first that fails; then,
    if ``commit``, the COMMIT in the same trip."""
    connection = cast(OneTripConnection, adapter)
    async with adapter._execute_mutex:
        begin, begun = connection.take_begin()
        ran, began = await connection.trip(_run_steps, adapter._connection, steps, begin, commit)
    _tell(begin, begun, began)
    return ran


def _tell(begin: str | None, begun: Begun | None, seconds: float | None) -> None:
    """Tell whoever deferred a ``BEGIN`` that it ran, and how long it took."""
    if begin is not None and begun is not None and seconds is not None:
        begun(begin, seconds)
