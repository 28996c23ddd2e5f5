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

import collections
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

_Outcome = tuple[Any, int, int | None, list[Any] | None]
"""What one trip brings back: description, rowcount, lastrowid, rows (None: no result set)."""


def _run(connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """In the driver's thread: a cursor, the statement, its rows, the cursor closed."""
    cursor: sqlite3.Cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


Step = tuple[str, Any, bool]
"""One statement of a trip that runs several: its SQL, its parameters (or a function of the
rows of the statements before it), and whether many."""
Ran = tuple[list[list[Any]], list[float | None], BaseException | None]
"""What such a trip brings back: each statement's rows (None as []), the seconds each took
(None: a ``many`` with nothing to run), and the error of the statement that failed (the
last one timed; none run after it)."""


def _steps(steps: Sequence[Step], run: Callable[[str, Any, bool], list[Any]]) -> Ran:
    """The statements one after the other with ``run``, up to the first error."""
    rows: list[list[Any]] = []
    took: list[float | None] = []
    for operation, given, many in steps:
        started = time.perf_counter()
        try:
            parameters = given(rows) if callable(given) else given
            if many and not parameters:
                rows.append([])
                took.append(None)
                continue
            found = run(operation, parameters, many)
        except Exception as error:
            took.append(time.perf_counter() - started)
            return rows, took, error
        took.append(time.perf_counter() - started)
        rows.append(found)
    return rows, took, None


async def each_step(
    steps: Sequence[Step], run: Callable[[str, Any, bool], Awaitable[list[Any]]]
) -> Ran:
    """``_steps`` with a trip per statement (``run`` awaited): for drivers without a thread."""
    rows: list[list[Any]] = []
    took: list[float | None] = []
    for operation, given, many in steps:
        started = time.perf_counter()
        try:
            parameters = given(rows) if callable(given) else given
            if many and not parameters:
                rows.append([])
                took.append(None)
                continue
            found = await run(operation, parameters, many)
        except Exception as error:
            took.append(time.perf_counter() - started)
            return rows, took, error
        took.append(time.perf_counter() - started)
        rows.append(found)
    return rows, took, None


def _run_steps(connection: aiosqlite.Connection, steps: Sequence[Step]) -> Ran:
    """In the driver's thread: the statements one after the other, up to the first error."""
    return _steps(
        steps, lambda sql, parameters, many: _run(connection, sql, parameters, many)[3] or []
    )


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
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await self._connection._execute(
                _run, self._connection, operation, parameters, many
            )
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter, handing out ``OneTripCursor``s."""

    __slots__ = ()
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def _in_transaction(self) -> bool:
        # sqlite3 reads this flag (sqlite3_get_autocommit) from any thread; the adapter is
        # used by one task at a time, so no statement of this connection is running now.
        connection = self._connection._connection
        return connection is not None and connection.in_transaction

    def commit(self) -> None:
        """Commit; no trip when no transaction is open (sqlite3 would do nothing)."""
        if self._in_transaction():
            super().commit()

    def rollback(self) -> None:
        """Roll back; no trip when no transaction is open, as after every commit when the
        pool resets a returned connection."""
        if self._in_transaction():
            super().rollback()


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
    async with adapter._execute_mutex:
        outcome: _Outcome = await adapter._connection._execute(
            _run, adapter._connection, operation, parameters, many
        )
    return outcome[3] or []


async def run_steps(adapter: AsyncAdapt_aiosqlite_connection, steps: Sequence[Step]) -> Ran:
    """Several statements in one trip, in order, stopping at the first that fails."""
    async with adapter._execute_mutex:
        ran: Ran = await adapter._connection._execute(_run_steps, adapter._connection, steps)
    return ran
