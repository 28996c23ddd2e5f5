"""The hottest statements run with the driver's cursor, in the unit of work's transaction.

Through SQLAlchemy each execution of a Core statement pays for a compiled-cache lookup, an
execution context and its events, a bind processor per parameter of every row, a result
processor per value read and the result's wrapping, and the greenlet bridge to the async
driver: more than the statement itself costs SQLite or MariaDB on a send batch or a history
page. Here SQLAlchemy compiles a statement once per dialect (its SQL text, every value a
bound parameter, and their order) and the driver runs it, with tuples of driver-native
values in and tuples out. The caller converts the few typed values (UTC datetimes, enums)
once per batch with ``bound``, and reads rows knowing the driver's types.

What this skips: the engine's cursor events, so these statements are not in the SQL
metrics, slow-query log or SQL spans (``observability.db_metrics``), and the SQLite write
lock's read-only guard (callers run only the statements their unit of work may run). The
transaction is the session's: ``driver_of`` begins it through SQLAlchemy (the write lock,
``BEGIN IMMEDIATE``) and the unit of work commits or rolls it back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Column
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from cmschat.db import sqlite_driver

Row = tuple[Any, ...]


class Statement:
    """A Core statement (``build(dialect)``) compiled once per dialect, its parameters
    given as tuples in ``names``' order (checked against the compiled order)."""

    def __init__(self, build: Callable[[Dialect], ClauseElement], names: Sequence[str]) -> None:
        self._build = build
        self.names = tuple(names)
        self._sql: dict[str, str] = {}

    def sql(self, dialect: Dialect) -> str:
        """The driver's SQL text (its paramstyle) for ``dialect``."""
        text = self._sql.get(dialect.name)
        if text is None:
            compiled = self._build(dialect).compile(dialect=dialect)
            order = tuple(cast(SQLCompiler, compiled).positiontup or ())
            if order != self.names:
                raise RuntimeError(f"parameters compile as {order}, not {self.names}")
            text = self._sql[dialect.name] = compiled.string
        return text


class Driver:
    """The driver connection of a session's transaction (``driver_of``)."""

    def __init__(self, adapter: Any, dialect: Dialect) -> None:
        self._adapter = adapter
        self.dialect = dialect
        self.sqlite = dialect.name == "sqlite"

    async def rows(self, statement: Statement, parameters: Row) -> list[Row]:
        """Run a statement once; its rows (empty when it returns none)."""
        return await self._run(statement.sql(self.dialect), parameters, many=False)

    async def many(self, statement: Statement, parameters: Sequence[Row]) -> None:
        """Run a write once per parameter tuple, in one call to the driver."""
        if parameters:
            await self._run(statement.sql(self.dialect), parameters, many=True)

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> list[Row]:
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

    def bound(self, column: Column[Any], value: Any) -> Any:
        """``value`` as the driver takes it for ``column`` (its type's bind processing)."""
        processor = column.type._cached_bind_processor(self.dialect)
        return value if processor is None else processor(value)


async def driver_of(session: AsyncSession) -> Driver:
    """The driver connection of ``session``'s transaction (begun now if it was not)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return Driver(raw.dbapi_connection, connection.dialect)
