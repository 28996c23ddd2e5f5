"""The group commit's writer: its transactions on a connection it keeps, without an ORM session.

A batch of sends is a few driver trips (``driver_sql.Driver``); around them an ORM unit of
work cost most of a lone send's batch: the ``AsyncSession`` and its transaction, the pool's
checkout and checkin (on MariaDB a pre-ping and a reset-on-return rollback, each a round
trip) and the passes through SQLAlchemy's async bridge to begin, commit and close. Here the
writer keeps one connection checked out between batches, as ``db.readers`` keeps readers,
and each transaction on it does:

- **begin**, when the batch first asks for its driver (a batch whose sends all fail their
  checks neither locks nor begins), without SQLAlchemy's transaction or its bridge: on
  SQLite the write lock taken here (awaited in line when another writer holds it) and
  ``BEGIN IMMEDIATE`` deferred into the first statement's trip, announced to the cursor
  events as before (``write_lock.defer_begin``); on MariaDB nothing (the transaction
  begins with the first statement).
- **commit**: the engine's ``commit`` event, then the driver's own ``COMMIT`` (SQLite: one
  trip to its thread, none if no statement ran; MariaDB: one round trip, no pass through
  the bridge); SQLite's lock freed. Once the COMMIT is on its way, and before its answer
  is awaited, the work the batch left for then (``while_committing``: its answers' JSON)
  runs in the loop, while SQLite's thread writes and syncs, or MariaDB commits. A send
  batch on SQLite sends its COMMIT with its last statements (``steps_then_commit``): the
  thread goes on to it without waiting its turn in a busy loop; the work runs after.
- **after the commit**: the hooks of what committed (the audit head's export), the events
  handed to the publisher, the after-commit hooks: nothing leaves before the commit.
- **on any error**: rolled back (the events dropped, the lock freed), and the connection
  given back to the pool, invalidated first if the server dropped it; the next batch
  checks out a fresh one. A kept connection older than the pool's ``recycle`` is given
  back too.

Whatever a batch still needs of SQLAlchemy (the rare reads: a membership or name not
cached, a replied-to message's room, a repeated client id's stored message, uploads) runs
on this connection once SQLAlchemy's ``Connection`` is told of the transaction
(``_joined``: its ``begin`` does no I/O, the lock's listener finding the lock held), Core
statements with ``execute``, ORM reads in a session joined to the transaction (``orm``),
made only then; such a transaction commits through SQLAlchemy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.expression import Executable

from cmschat import events
from cmschat.db import write_lock
from cmschat.db.driver_sql import Driver, Row, Statement
from cmschat.db.sqlite_driver import OneTripConnection
from cmschat.db.started import Started

if TYPE_CHECKING:
    from cmschat.db.writer_connection import Writer

log = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None]]


class WriterTransaction:
    """One transaction of the writer: its driver, reads, queued events and hooks."""

    def __init__(
        self, writer: Writer, info: dict[str, Any], publisher: events.Publisher | None
    ) -> None:
        self._writer = writer
        self._publisher = publisher
        self.info = info
        """The actor and clock, as a unit of work's session carries them."""
        self.session_class = writer.session_class
        """The database's session class, whose hooks say what its commits keep (audit)."""
        self._connection: AsyncConnection | None = None
        self._driver: Driver | None = None
        self._orm: AsyncSession | None = None
        self._events: list[events.Published] = []
        self._committed: list[Callable[[], None]] = []
        self._after: list[AfterCommit] = []
        self._meanwhile: list[Callable[[], None]] = []
        self._committed_in_trip = False
        self.outcome_unknown = False
        """True when the COMMIT was sent and failed: the server may have committed or not
        (a connection lost in between), so the work must not simply be done again."""

    # A class of its own rather than ``asynccontextmanager``: no generator per transaction.
    async def __aenter__(self) -> WriterTransaction:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: Any, _tb: Any) -> None:
        try:
            if error is not None:
                # Committed with its statements: whatever failed since, it is stored.
                self.outcome_unknown = self.outcome_unknown or self._committed_in_trip
                await self._rollback(error)
                return
            try:
                await self._commit()
            except BaseException as failed:
                await self._rollback(failed)
                raise
        finally:
            if self._writer.in_use is self:
                self._writer.in_use = None
        try:
            await self._finish(self._publisher)
        except Exception:
            # Committed: the senders must hear so, and nothing may send the batch again.
            # Events not published reach clients by gap repair or catch-up.
            log.exception("after a committed writer transaction")

    async def driver(self) -> Driver:
        """The driver of the transaction (begun on the first ask)."""
        if self._driver is None:
            self._driver = await self._begin()
        return self._driver

    async def steps_then_commit(
        self, steps: Sequence[tuple[Statement, Any, bool]]
    ) -> list[list[Row]]:
        """The transaction's last statements (``Driver.steps``) and, on SQLite, its COMMIT in
        the same trip to the driver's thread: the thread goes from the statements to the
        COMMIT without waiting for the event loop, which under load takes up the trip's
        answer only after every frame already in its queue (measured: 5 % more sends, one
        trip fewer per batch). What the block does after this must not fail (a failure
        then leaves the outcome unknown); its ``while_committing`` work runs after the trip.
        Elsewhere (MariaDB, or a rare read joined SQLAlchemy), the statements only."""
        driver = await self.driver()
        connection = _open(self._connection)
        adapter = driver._adapter
        if not isinstance(adapter, OneTripConnection) or connection.in_transaction():
            return await driver.steps(steps)
        sync = _sync(connection)
        # The engine's ``commit`` event, as SQLAlchemy fires it (before the COMMIT).
        sync.dispatch.commit(sync)
        self.outcome_unknown = True
        try:
            rows = await driver.steps(steps, commit=True)
        except Exception:
            # Still in its transaction: a statement failed, or the COMMIT did and left it
            # open; either way nothing is stored, and the block's end rolls back.
            if adapter.in_transaction_now():
                self.outcome_unknown = False
            raise
        self.outcome_unknown = False
        self._committed_in_trip = True
        return rows

    async def execute(self, statement: Executable) -> Result[*tuple[Any, ...]]:
        """A Core statement through SQLAlchemy, in the transaction (for rare reads)."""
        return await (await self._joined()).execute(statement)

    async def orm(self) -> AsyncSession:
        """An ORM session in the transaction, made on the first ask (rare reads only: it
        never commits, nor ends the transaction when closed)."""
        if self._orm is None:
            self._orm = AsyncSession(
                bind=await self._joined(), expire_on_commit=False, autoflush=False
            )
        return self._orm

    def queue_events(self, queued: Iterable[events.Published]) -> None:
        """Events to publish once the transaction has committed."""
        self._events.extend(queued)

    def on_commit(self, hook: Callable[[], None]) -> None:
        """``hook`` run right after the commit, before the events are published."""
        self._committed.append(hook)

    def while_committing(self, work: Callable[[], None]) -> None:
        """``work`` run while the COMMIT is on its way (before its answer; never if the block
        fails before): it must not touch the database, and what it queues leaves only after
        the commit. It should not raise: if it does, the error is logged and the transaction
        goes on as committed or failed by its COMMIT alone (the COMMIT cannot be called
        back, and a batch reported failed when stored could be sent again)."""
        self._meanwhile.append(work)

    def after_commit(self, hook: AfterCommit) -> None:
        """``hook`` awaited once the transaction has committed and its events are out."""
        self._after.append(hook)

    async def _begin(self) -> Driver:
        if self._writer.in_use is not None:
            # Two would share the kept connection and so one transaction.
            raise RuntimeError("the writer runs one transaction at a time")
        self._writer.in_use = self
        connection = self._connection = await self._writer.connection()
        sync = _sync(connection)
        adapter = sync.connection.dbapi_connection
        lock = self._writer.lock
        if isinstance(adapter, OneTripConnection) and lock is not None:
            if not lock.try_acquire(adapter):
                await lock.acquire(adapter)
            write_lock.defer_begin(sync, adapter)
        return Driver(adapter, connection.dialect, sync)

    async def _joined(self) -> AsyncConnection:
        """The connection, its SQLAlchemy ``Connection`` told of the transaction (begun on
        the driver): its ``begin`` then does no I/O, the lock's listener finding it held."""
        await self.driver()
        connection = _open(self._connection)
        if not connection.in_transaction():
            _sync(connection).begin()
        return connection

    async def _commit(self) -> None:
        if self._orm is not None:
            await self._orm.close()
        connection = self._connection
        if connection is None:  # nothing begun, nothing to commit
            self._work_meanwhile()
            return
        if connection.in_transaction():  # joined by a rare read: SQLAlchemy's commit
            await self._sending_commit(connection.commit())
            return
        sync = _sync(connection)
        adapter: Any = sync.connection.dbapi_connection
        if not self._committed_in_trip:
            # The engine's ``commit`` event, as SQLAlchemy fires it (before the COMMIT).
            sync.dispatch.commit(sync)
        if isinstance(adapter, OneTripConnection):
            deferred, _ = adapter.take_begin()  # still deferred: no statement ran
            if deferred is None and adapter.in_transaction_now():
                await self._sending_commit(adapter._connection.commit())  # aiosqlite's: one trip
            else:
                self._work_meanwhile()
            if self._writer.lock is not None:
                self._writer.lock.release(adapter)
        else:
            # The driver's own: no pass through the bridge.
            await self._sending_commit(adapter._connection.commit())

    async def _sending_commit(self, commit: Coroutine[Any, Any, None]) -> None:
        """Send a COMMIT, do the work left for then, await the COMMIT: meanwhile a failure
        leaves the outcome unknown (``outcome_unknown``). A driver's error is raised as
        SQLAlchemy raises it: a lost server marked invalidated, so ``drop`` invalidates the
        connection and the transports answer 503, not 500."""
        self.outcome_unknown = True
        try:
            sent = Started(commit)  # on its way now (SQLite: queued on the driver's thread)
            self._work_meanwhile()
            await sent
        except Exception as error:
            failed = _open_driver(self._driver).translated("COMMIT", error, many=False)
            if failed is error:
                raise
            raise failed from error
        self.outcome_unknown = False

    async def _rollback(self, error: BaseException) -> None:
        """Roll back and give the connection back to the pool (invalidated if dropped)."""
        self._events.clear()
        self._committed.clear()
        self._after.clear()
        self._meanwhile.clear()
        try:
            if self._orm is not None:
                await self._orm.close()
        finally:
            if self._connection is not None:
                await self._writer.drop(self._connection, error)

    def _work_meanwhile(self) -> None:
        work, self._meanwhile = self._meanwhile, []
        for each in work:
            try:
                each()
            except Exception:
                log.exception("work done while committing failed; the commit goes on")

    async def _finish(self, publisher: events.Publisher | None) -> None:
        for hook in self._committed:
            hook()
        if self._events and publisher is not None:
            await publisher(self._events)
        for after in self._after:
            await after()


def _open(connection: AsyncConnection | None) -> AsyncConnection:
    if connection is None:  # pragma: no cover - begun before any use
        raise RuntimeError("the writer's transaction has not begun")
    return connection


def _open_driver(driver: Driver | None) -> Driver:
    if driver is None:  # pragma: no cover - a COMMIT is sent only after a begin
        raise RuntimeError("the writer's transaction has not begun")
    return driver


def _sync(connection: AsyncConnection) -> Connection:
    sync = connection.sync_connection
    if sync is None:  # pragma: no cover - a kept connection is open
        raise RuntimeError("the writer's connection is closed")
    return sync
