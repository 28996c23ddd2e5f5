"""Read-only connections a worker keeps checked out between requests (the hot GET's).

``reading`` checks a connection out of the pool for each request and back in
after it: the pool's checkout and checkin with their events, a ``Connection`` object, two
greenlet hops, and on MariaDB a pre-ping and a reset-on-return rollback, each a round trip
to the server. ``Readers`` keeps up to ``keep`` of those connections checked out in a free
list instead, so a request takes one, runs its statements and puts it back.

What the pool did for a connection, done here:

- **Liveness.** No pre-ping: a kept connection the server dropped (a restart, a killed
  thread, ``wait_timeout``) fails its first statement with a disconnect error; that
  connection is invalidated, and ``reading``'s first read runs once more on a connection
  from the pool (pre-pinged there), so the request is answered as before. A connection
  older than the pool's ``recycle`` is given back rather than reused.
- **No transaction left open.** On MariaDB a kept connection reads in autocommit: each
  statement is its own transaction (``READ COMMITTED`` gave each its own snapshot already),
  so no metadata lock outlives it to block a migration's ``ALTER TABLE`` (the pool's
  reset-on-return rollback ended it before). SQLite's driver already reads outside any
  transaction (``isolation_level = None``).
- **Errors.** A connection is kept only after a request that ended normally or with an
  error its caller names harmless (cmschat's own 401 or 404, raised between statements);
  after any other error it is given back to the pool (reset there), invalidated first
  when the server dropped it.

- **On SQLite, no more reads at once than connections kept.** Each SQLite connection has a
  thread of its own (aiosqlite's), and every page needs the interpreter in both threads:
  32 pages at once on 32 connections spent 2.3 ms of CPU per page handing the interpreter
  lock between threads, 4 at once 1.3 ms, for more pages per second (docs/performance.md).
  So a read waits its turn for a kept connection (first come, first served) rather than
  taking one more from the pool. MariaDB's driver has no thread: there every read goes at
  once, and the server works on them in parallel.

The engine's cursor events still fire on a kept connection (the read-only guard refuses a
write) and the statement observer sees every statement: they are ``Driver``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cmschat.db.driver_sql import Driver
from cmschat.db.sqlite_driver import OneTripConnection

T = TypeVar("T")
Errors = type[BaseException] | tuple[type[BaseException], ...]

KEEP = 4
"""Connections kept per worker at most. Kept connections count against the pool's limit
(its size and overflow: 5 + 10 on SQLite, 10 + 20 on MariaDB), so few enough that the
units of work still find theirs; and one is kept only while the pool has no more out than
its size (``_crowded``)."""


class _Kept:
    """A checked-out connection and the driver over it."""

    __slots__ = ("connection", "driver", "since")

    def __init__(self, connection: AsyncConnection, driver: Driver) -> None:
        self.connection = connection
        self.driver = driver
        self.since = time.monotonic()


def _in_transaction(kept: _Kept) -> bool:
    """Whether a transaction is open on ``kept`` (SQLite): the pool's reset rolls it back,
    where a kept reader would go on reading in it, unseen writes and lock included."""
    raw = kept.connection.sync_connection
    adapter = None if raw is None else raw.connection.dbapi_connection
    return isinstance(adapter, OneTripConnection) and adapter.in_transaction_now()


class Readers:
    """A worker's free list of read-only connections (``engine``: the read-only engine)."""

    def __init__(self, engine: AsyncEngine, *, keep: int = KEEP) -> None:
        self._engine = engine
        self._keep = keep
        self._free: list[_Kept] = []
        self._closed = False
        self._turns = asyncio.Semaphore(keep) if engine.dialect.name == "sqlite" else None
        """SQLite: reads at once at most (one per kept connection); None: unbounded."""
        recycle: float = getattr(engine.sync_engine.pool, "_recycle", -1)
        self._recycle = recycle if recycle > 0 else None

    @asynccontextmanager
    async def reading(
        self, first: Callable[[Driver], Awaitable[T]], *, harmless: Errors = ()
    ) -> AsyncIterator[tuple[Driver, T]]:
        """A connection and what ``first`` read on it, for statements that each read on
        their own (``reading``'s promise). ``first`` runs again, once, on a
        connection from the pool when a kept one turns out dropped by the server: it must
        only read. ``harmless``: errors the caller raises between statements (its domain
        errors), after which the connection is kept as after a request that succeeded."""
        # One generator, the turn taken and given back in it: every page's await chain
        # passes through each context manager's frames, both ways, each time it waits.
        turns = self._turns
        if turns is not None:
            await turns.acquire()
        try:
            kept, reused = await self._take()
            try:
                found = await first(kept.driver)
            except DBAPIError as error:
                await self._drop(kept, error)
                if not (reused and error.connection_invalidated):
                    raise
                kept = await self._checked_out()
                try:
                    found = await first(kept.driver)
                except BaseException as again:
                    await self._settle(kept, again, harmless)
                    raise
            except BaseException as error:
                await self._settle(kept, error, harmless)
                raise
            try:
                yield kept.driver, found
            except BaseException as error:
                await self._settle(kept, error, harmless)
                raise
            await self._give_back(kept)
        finally:
            if turns is not None:
                turns.release()

    async def _take(self) -> tuple[_Kept, bool]:
        """A kept connection (True) or one checked out of the pool now (False)."""
        while self._free:
            kept = self._free.pop()
            if self._recycle is None or time.monotonic() - kept.since < self._recycle:
                return kept, True
            await kept.connection.close()
        return await self._checked_out(), False

    async def _checked_out(self) -> _Kept:
        connection = await self._engine.connect()
        try:
            if connection.dialect.name != "sqlite":
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            sync = connection.sync_connection
            if sync is None:  # pragma: no cover - connect() returned an open connection
                raise RuntimeError("the connection is closed")
            raw = sync.connection.dbapi_connection
        except BaseException:
            await connection.close()
            raise
        return _Kept(connection, Driver(raw, connection.dialect, sync))

    async def _settle(self, kept: _Kept, error: BaseException, harmless: Errors) -> None:
        """After a request that failed: keep the connection only if it failed with a
        ``harmless`` error; else give it back to the pool."""
        if isinstance(error, harmless) and not isinstance(error, DBAPIError):
            await self._give_back(kept)
        else:
            await self._drop(kept, error)

    @staticmethod
    async def _drop(kept: _Kept, error: BaseException) -> None:
        """Give ``kept`` back to the pool, invalidated if the server dropped it."""
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            await kept.connection.invalidate()
        await kept.connection.close()

    async def _give_back(self, kept: _Kept) -> None:
        if (
            len(self._free) < self._keep
            and not self._closed
            and not self._crowded()
            and not _in_transaction(kept)
        ):
            self._free.append(kept)
        else:
            await kept.connection.close()

    def _crowded(self) -> bool:
        """Whether the pool has more connections out than its size (a burst of other work):
        then a reader goes back to the pool's idle ones rather than being kept aside."""
        pool = self._engine.sync_engine.pool
        size = getattr(pool, "size", None)
        out = getattr(pool, "checkedout", None)
        return size is not None and out is not None and bool(out() > size())

    async def close(self) -> None:
        """Give every kept connection back to the pool (before it is disposed); any in use
        now goes back to the pool when its request ends."""
        self._closed = True
        while self._free:
            await self._free.pop().connection.close()


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[Driver]:
    """A pooled connection of ``engine`` (the read-only one) for statements that each read
    on their own, with no transaction around them: no ORM session, no ``BEGIN`` or
    ``COMMIT`` through the engine.

    On SQLite each statement is then its own transaction (a snapshot of its own, as a
    single statement's is inside one); on MariaDB, where ``READ COMMITTED`` gives every
    statement its own snapshot anyway, the driver's implicit transaction ends when the pool
    takes the connection back (its reset-on-return rollback). The engine's cursor events
    still fire (the read-only guard refuses a write), and a connection the server dropped
    is invalidated, not pooled again.
    """
    async with engine.connect() as connection:
        sync = connection.sync_connection
        if sync is None:  # pragma: no cover - connect() returned an open connection
            raise RuntimeError("the connection is closed")
        try:
            yield Driver(sync.connection.dbapi_connection, connection.dialect, sync)
        except DBAPIError as error:
            if error.connection_invalidated:
                await connection.invalidate()
            raise
