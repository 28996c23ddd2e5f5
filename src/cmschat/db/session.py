"""Engines and units of work.

A unit of work is one transaction owned by its caller (a request, a CLI command, a job):
services only ``flush()``; the unit of work commits, then publishes the events queued on
it (``cmschat.events.queue_events``) and runs the after-commit hooks, or rolls back.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from cmschat import events
from cmschat.clock import Clock
from cmschat.db import audit_columns, write_lock
from cmschat.db.actors import ACTOR_KEY, ACTOR_NAME_KEY, CLOCK_KEY
from cmschat.db.dead_links import give_up_dead_links
from cmschat.db.readers import Readers
from cmschat.db.replicas import Replicas
from cmschat.db.sqlite_driver import one_trip_dbapi
from cmschat.db.writer import WriterTransaction
from cmschat.db.writer_connection import Writer

AFTER_COMMIT_KEY = "cmschat.after_commit"
PUBLISHER_KEY = "cmschat.publisher"
READ_ONLY_KEY = "cmschat.read_only"
ON_REPLICA_KEY = "cmschat.on_replica"
AfterCommit = Callable[[], Awaitable[None]]
WRITE_LOCK_TIMEOUT = 10.0
"""Seconds a SQLite write transaction waits in line before the request gets a 503."""


def _private_database_file(path: Path) -> None:
    """Create the database file 0600 just before SQLite would open (and create) it.

    SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode, so all
    three stay private (password hashes, every message); files left more open by an older
    version are tightened.
    """
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    for companion in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if companion.is_file() and companion.stat().st_mode & 0o077:
            companion.chmod(0o600)


def _prepare_sqlite(engine: AsyncEngine, *, write_lock_timeout: float) -> None:
    """WAL for concurrent readers, FULL sync so an acknowledged commit survives power loss;
    writers queue on the in-process write lock (``write_lock``)."""
    path = make_url(engine.url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        database = Path(path)
        if not database.parent.exists():
            database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

        @event.listens_for(engine.sync_engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            _private_database_file(database)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            # Only writers of other processes (the CLI) still wait here.
            "PRAGMA busy_timeout=10000",
        ):
            cursor.execute(pragma)
        cursor.close()

    write_lock.install(engine, timeout=write_lock_timeout)


POOL_SIZE = 10
"""The default of ``CMSCHAT_DATABASE__POOL_SIZE`` (for engines of one-off tools too)."""
POOL_OVERFLOW = 20
"""The default of ``CMSCHAT_DATABASE__POOL_OVERFLOW``."""
POOL_TIMEOUT = 10.0
"""The default of ``CMSCHAT_DATABASE__POOL_TIMEOUT``."""


def create_engine(
    database_url: str,
    *,
    echo: bool = False,
    write_lock_timeout: float = WRITE_LOCK_TIMEOUT,
    pool_size: int = POOL_SIZE,
    pool_overflow: int = POOL_OVERFLOW,
    pool_timeout: float = POOL_TIMEOUT,
    connect_timeout: float = 10.0,
    dead_link_timeout: float | None = None,
) -> AsyncEngine:
    """An async engine for SQLite (embedded default) or MariaDB (production).

    ``pool_size`` and ``pool_overflow`` size MariaDB's pool (SQLite has one of its own);
    ``pool_timeout`` bounds a wait for one of its connections, ``connect_timeout`` opening
    one, and ``dead_link_timeout`` (none by default) a silent peer (``dead_links.py``).
    """
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, echo=echo, module=one_trip_dbapi())
        _prepare_sqlite(engine, write_lock_timeout=write_lock_timeout)
        return engine
    url = make_url(database_url)
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    # READ COMMITTED: a transaction that waited on a row lock (a room's seq counter, a
    # unique key another request just took) then reads what the winner committed, instead
    # of the stale snapshot REPEATABLE READ would show it.
    engine = create_async_engine(
        url,
        echo=echo,
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_size=pool_size,
        max_overflow=pool_overflow,
        pool_timeout=pool_timeout,
        connect_args={"connect_timeout": connect_timeout},
    )
    if dead_link_timeout is not None:
        give_up_dead_links(engine, dead_link_timeout)
    return engine


class Database:
    """The engine, the session factory and the clock the rows are stamped with.

    The audit trail is not this layer's: the start-up (``create_app``, the CLI) hooks it
    on with ``audit.service.audited(db)``, onto ``session_class``.

    ``publisher``: where committed events go (the app's broker, the CLI's when it has one);
    without one they are dropped, as a process with no clients to tell has nobody to tell.
    """

    def __init__(
        self, engine: AsyncEngine, clock: Clock, *, publisher: events.Publisher | None = None
    ) -> None:
        audit_columns.install()
        events.install()
        self.engine = engine
        self.clock = clock
        self.publisher = publisher
        # A class of its own, so hooks installed on this database stay off every other one.
        self.session_class: type[Session] = type("DatabaseSession", (Session,), {})
        self._sessions = async_sessionmaker(
            engine,
            expire_on_commit=False,
            autoflush=False,
            sync_session_class=self.session_class,
        )
        # Same pool; on SQLite its transactions begin DEFERRED and skip the write lock.
        self.reader = engine.execution_options(**{write_lock.READ_ONLY_OPTION: True})
        """The engine of read-only work: the same pool, its statements checked to only read."""
        self.readers = Readers(self.reader)
        """Read-only connections kept checked out between the hot GETs (``db.readers``)."""
        self.writer = Writer(engine, self.session_class)
        """The group commit's connection, kept between its transactions (``db.writer``)."""
        self.replicas: Replicas | None = None
        """Read replicas for reads that may go to one (``fresh_read``); None: none."""

    def session(
        self,
        actor: str | None = None,
        *,
        actor_name: str | None = None,
        read_only: bool = False,
        replica: AsyncEngine | None = None,
    ) -> AsyncSession:
        """A new session; set its actor here or later with ``set_actor``.

        ``actor_name``: the user's username, which audit events snapshot. ``read_only``: its
        transactions must not write; on SQLite they then never wait for a writer.
        ``replica``: read from that replica (read-only).
        """
        read_only = read_only or replica is not None
        reader = self.reader if replica is None else replica
        session = self._sessions(bind=reader) if read_only else self._sessions()
        session.info[READ_ONLY_KEY] = read_only
        session.info[ON_REPLICA_KEY] = replica is not None
        session.info[CLOCK_KEY] = self.clock
        session.info[AFTER_COMMIT_KEY] = []
        session.info[PUBLISHER_KEY] = self.publisher
        if actor is not None:
            session.info[ACTOR_KEY] = actor
        if actor_name is not None:
            session.info[ACTOR_NAME_KEY] = actor_name
        return session

    @asynccontextmanager
    async def unit_of_work(
        self,
        actor: str | None = None,
        *,
        actor_name: str | None = None,
        read_only: bool = False,
        replica: AsyncEngine | None = None,
    ) -> AsyncIterator[AsyncSession]:
        """One transaction: commit on success, roll back on error, then run after-commit hooks."""
        reading = self.session(actor, actor_name=actor_name, read_only=read_only, replica=replica)
        async with reading as session:
            try:
                yield session
            except BaseException as exc:
                await finish(session, exc)
                raise
            await finish(session, None)

    @asynccontextmanager
    async def fresh_read(
        self, actor: str | None = None, *, actor_name: str | None = None
    ) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work on a replica that has every commit made before it
        began, or on the primary (db/replicas.py)."""
        replica = None if self.replicas is None else await self.replicas.fresh()
        unit = self.unit_of_work(actor, actor_name=actor_name, read_only=True, replica=replica)
        async with unit as session:
            yield session

    def writer_unit_of_work(self, actor: str) -> WriterTransaction:
        """A transaction of this process's writer (the group commit's), for ``async with``:
        on the connection it keeps, without an ORM session (``db.writer``); committed,
        then its events published and hooks run, or rolled back on any error."""
        return self.writer.transaction({CLOCK_KEY: self.clock, ACTOR_KEY: actor}, self.publisher)

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if self.replicas is not None:
            await self.replicas.dispose()
        await self.readers.close()
        await self.writer.close()
        await self.engine.dispose()


def on_replica(session: AsyncSession) -> bool:
    """Whether ``session`` reads a replica (``fresh_read``): what it reads must not fill
    the per-process caches, whose rule assumes the primary's latest state."""
    return bool(session.info.get(ON_REPLICA_KEY))


def is_read_only(session: AsyncSession) -> bool:
    """Whether ``session`` was opened ``read_only`` (its transactions must not write)."""
    return bool(session.info.get(READ_ONLY_KEY))


async def finish(session: AsyncSession, error: BaseException | None) -> None:
    """End a unit of work: commit, publish its events and run after-commit hooks; or roll
    back, which drops the events queued in it."""
    if error is not None:
        await session.rollback()
        await _publish_events(session)  # none, unless the work committed part-way
        return
    await session.commit()
    await _publish_events(session)
    await run_after_commit(session)


async def _publish_events(session: AsyncSession) -> None:
    """Hand the events of the committed transaction to the session's publisher."""
    committed = events.take_ready(session)
    publisher: events.Publisher | None = session.info.get(PUBLISHER_KEY)
    if not committed or publisher is None:
        return
    await publisher(committed)


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the unit of work owning ``session`` has committed."""
    session.info[AFTER_COMMIT_KEY].append(hook)


async def run_after_commit(session: AsyncSession) -> None:
    """Run and clear the hooks queued on a committed session."""
    hooks: list[AfterCommit] = session.info.get(AFTER_COMMIT_KEY, [])
    session.info[AFTER_COMMIT_KEY] = []
    for hook in hooks:
        await hook()
