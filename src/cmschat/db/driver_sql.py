"""The hottest statements run with the driver's cursor, in the unit of work's transaction.

Through SQLAlchemy each execution of a Core statement pays for a compiled-cache lookup, an
execution context and its events, a bind processor per parameter of every row, a result
processor per value read and the result's wrapping, and the greenlet bridge to the async
driver: more than the statement itself costs SQLite or MariaDB on a send batch or a history
page. Here SQLAlchemy compiles a statement once per dialect (its SQL text, every value a
bound parameter, and their order) and the driver runs it, with tuples of driver-native
values in and tuples out. The caller converts the few typed values (UTC datetimes, enums)
once per batch with ``bound``, and reads rows knowing the driver's types.

The engine's cursor events still fire around each statement (the SQLite read-only guard),
and the statement observer set on the dialect (``_OBSERVER``: SQL metrics, slow-query log,
spans) sees each one. A driver error is raised as SQLAlchemy raises it (an
``OperationalError`` for a lost server, an ``IntegrityError`` for a duplicate), so callers
and the outage mapping see one kind of error whichever path ran the statement. The
transaction is the session's: ``driver_of`` begins it through SQLAlchemy (the write lock,
``BEGIN IMMEDIATE``); the unit of work commits or rolls it back (a dropped connection
invalidated).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from cmschat.db import mariadb_trips, sqlite_driver

Row = tuple[Any, ...]
Ended = Callable[[str, float], None]
Failed = Callable[[str, float, BaseException], None]
Listeners = tuple[Callable[..., Any], ...]
_OBSERVER = "cmschat_statement_observer"
"""The dialect's attribute holding ``(ended, failed)``, called for every statement run here:
set by observability's SQL timing (observability/db_metrics.py), which this layer does not
import."""


class Statement:
    """A Core statement (``build(dialect)``) compiled once per dialect, its parameters
    given as tuples in ``names``' order (checked against the compiled order)."""

    def __init__(self, build: Callable[[Dialect], ClauseElement], names: Sequence[str]) -> None:
        self._build = build
        self.names = tuple(names)
        self._sql: dict[str, tuple[str, Row]] = {}
        self._reads: dict[str, bool] = {}

    def reads(self, dialect: Dialect) -> bool:
        """Whether the statement returns rows on ``dialect`` (a query, a write with
        ``RETURNING``, or a text statement, whose kind is not known): a statement whose
        parameters are made from rows cannot share a MariaDB round trip with it."""
        if dialect.name not in self._reads:
            self.sql(dialect)
        return self._reads[dialect.name]

    def sql(self, dialect: Dialect) -> tuple[str, Row]:
        """The driver's SQL text (its paramstyle) for ``dialect``, and the values of the
        parameters the dialect adds after the caller's (SQLite's ``OFFSET 0``)."""
        found = self._sql.get(dialect.name)
        if found is None:
            compiled = cast(SQLCompiler, self._build(dialect).compile(dialect=dialect))
            order = tuple(compiled.positiontup or ())
            added = order[len(self.names) :]
            if order[: len(self.names)] != self.names or any(
                compiled.params[name] is None for name in added
            ):
                raise RuntimeError(f"parameters compile as {order}, not {self.names}")
            found = self._sql[dialect.name] = (
                compiled.string,
                tuple(compiled.params[name] for name in added),
            )
            writes = compiled.isinsert or compiled.isupdate or compiled.isdelete
            self._reads[dialect.name] = not writes or bool(compiled.effective_returning)
        return found


class BySize:
    """Statements whose shape depends on a size (rows, ``IN`` items): one per size, made
    by ``make(size)`` on first use and kept."""

    def __init__(self, make: Callable[[int], Statement]) -> None:
        self._make = make
        self._made: dict[int, Statement] = {}

    def __call__(self, size: int) -> Statement:
        statement = self._made.get(size)
        if statement is None:
            statement = self._made[size] = self._make(size)
        return statement


class Driver:
    """The driver connection of a session's transaction (``driver_of``)."""

    def __init__(self, adapter: Any, dialect: Dialect, connection: Connection) -> None:
        self._adapter = adapter
        self.dialect = dialect
        self.sqlite = dialect.name == "sqlite"
        self._connection = connection

    async def rows(self, statement: Statement, parameters: Row) -> list[Row]:
        """Run a statement once; its rows (empty when it returns none)."""
        sql, added = statement.sql(self.dialect)
        return await self._run(sql, parameters + added if added else parameters, many=False)

    async def many(self, statement: Statement, parameters: Sequence[Row]) -> None:
        """Run a write once per parameter tuple, in one call to the driver."""
        if parameters:
            sql, added = statement.sql(self.dialect)
            if added:
                parameters = [row + added for row in parameters]
            await self._run(sql, parameters, many=True)

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> list[Row]:
        # The engine's cursor events, as SQLAlchemy fires them: the SQL metrics, slow-query
        # log and spans (observability.db_metrics), the read-only guard (write_lock).
        connection = self._connection
        before, after = _cursor_listeners(connection)
        observer: tuple[Ended, Failed] | None = getattr(self.dialect, _OBSERVER, None)
        for listener in before:
            listener(connection, None, sql, parameters, None, many)
        started = time.perf_counter()
        try:
            rows = await self._driver(sql, parameters, many=many)
        except Exception as error:
            if observer is not None:
                observer[1](sql, time.perf_counter() - started, error)
            translated = self.translated(sql, error, many=many)
            if translated is error:
                raise
            raise translated from error
        finally:
            for listener in after:
                listener(connection, None, sql, parameters, None, many)
        if observer is not None:
            observer[0](sql, time.perf_counter() - started)
        return rows

    async def steps(
        self, steps: Sequence[tuple[Statement, Any, bool]], *, commit: bool = False
    ) -> list[list[Row]]:
        """Run statements in order, ``(statement, parameters, many)`` each, in one trip to
        SQLite's driver thread, or in as few MariaDB round trips as they allow
        (``mariadb_trips``); each one's rows. ``parameters`` may be a function of the rows
        of the statements before it (a list per statement), called in SQLite's thread or
        before the round trip that sends it; a ``many`` with no parameters is skipped.
        ``commit``: SQLite's COMMIT in the same trip if all ran (``steps_then_commit``).

        Only the trip is shared: each statement is seen by the cursor events (a function's
        parameters as None) and the observer (with its own duration, taken in the driver's
        thread; on MariaDB its share of the round trip), and the first that fails is raised
        as SQLAlchemy's error, the statements after it never run.
        """
        planned: list[tuple[str, Any, bool]] = []
        reads: list[bool] = []
        for statement, parameters, many in steps:
            sql, added = statement.sql(self.dialect)
            if added:
                parameters = _adding(parameters, added, many=many)
            planned.append((sql, parameters, many))
            reads.append(statement.reads(self.dialect))
        connection = self._connection
        before, after = _cursor_listeners(connection)
        # A function's parameters are not known yet (None); a ``many`` with none is skipped.
        announced = [
            (sql, None if callable(parameters) else parameters, many)
            for sql, parameters, many in planned
            if callable(parameters) or parameters or not many
        ]
        for sql, shown, many in announced:
            for listener in before:
                listener(connection, None, sql, shown, None, many)
        try:
            if self.sqlite:
                rows, took, error = await sqlite_driver.run_steps(
                    self._adapter, planned, commit=commit
                )
            else:
                rows, took, error = await mariadb_trips.run_steps(self._adapter, planned, reads)
        finally:
            if after:
                for sql, shown, many in announced:
                    for listener in after:
                        listener(connection, None, sql, shown, None, many)
        observer: tuple[Ended, Failed] | None = getattr(self.dialect, _OBSERVER, None)
        ran = [*planned, ("COMMIT", None, False)] if commit else planned  # its error: one more
        if observer is not None:
            for n, seconds in enumerate(took):
                if error is not None and n == len(rows):
                    observer[1](ran[n][0], seconds or 0.0, error)
                elif seconds is not None:  # None: a ``many`` with nothing to run
                    observer[0](ran[n][0], seconds)
        if error is not None:
            sql, _parameters, many = ran[len(rows)]
            translated = self.translated(sql, error, many=many)
            if translated is error:
                raise error
            raise translated from error
        return rows

    def translated(self, sql: str, error: BaseException, *, many: bool) -> BaseException:
        """A driver's error as SQLAlchemy raises it; any other error as it is."""
        dbapi = self.dialect.loaded_dbapi
        if not isinstance(error, dbapi.Error):
            return error
        return DBAPIError.instance(
            sql,
            None,
            cast(Exception, error),
            dbapi.Error,
            hide_parameters=True,  # message bodies, token digests
            connection_invalidated=self.dialect.is_disconnect(error, None, None),
            dialect=self.dialect,
            ismulti=many,
        )

    async def _driver(self, sql: str, parameters: Any, *, many: bool) -> list[Row]:
        adapter = self._adapter
        if self.sqlite:
            return await sqlite_driver.run(adapter, sql, parameters, many=many)
        # SQLAlchemy's asyncmy adapter: one statement at a time per connection, as it does.
        async with adapter._execute_mutex:
            cursor = adapter._connection.cursor()
            try:
                if many:
                    await cursor.executemany(sql, parameters)
                    return []
                await cursor.execute(sql, parameters)
                return list(await cursor.fetchall() or ())
            finally:
                await cursor.close()

    def utc(self, value: Any) -> datetime:
        """A UTC datetime column's value as read with the driver (SQLite's text, MariaDB's
        naive datetime) as the aware datetime SQLAlchemy would give (``db.base.UTCDateTime``)."""
        if self.sqlite:
            value = datetime.fromisoformat(value)
        return cast(datetime, value).replace(tzinfo=UTC)

    def bound(self, column: ColumnElement[Any], value: Any) -> Any:
        """``value`` as the driver takes it for ``column`` (its type's bind processing)."""
        processor = column.type._cached_bind_processor(self.dialect)
        return value if processor is None else processor(value)


def _cursor_listeners(connection: Connection) -> tuple[Listeners, Listeners]:
    """The ``before``/``after_cursor_execute`` listeners as their events' calls run them (the
    connection's, then the engine's), listed once a run: a call walks chained collections."""
    events: Any = connection.dispatch
    b, a = events.before_cursor_execute, events.after_cursor_execute
    return (*b.parent_listeners, *b.listeners), (*a.parent_listeners, *a.listeners)


def _adding(parameters: Any, added: Row, *, many: bool) -> Any:
    """``parameters`` with the dialect's own values after each tuple (a function's too)."""
    if callable(parameters):
        made = parameters
        return lambda found: _adding(made(found), added, many=many)
    return [row + added for row in parameters] if many else parameters + added


async def driver_of(session: AsyncSession) -> Driver:
    """The driver connection of ``session``'s transaction (begun now if it was not)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    sync = connection.sync_connection
    if sync is None:
        raise RuntimeError("the session's connection is closed")
    return Driver(raw.dbapi_connection, connection.dialect, sync)
