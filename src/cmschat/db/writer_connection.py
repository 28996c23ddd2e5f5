"""The group commit's writer connection (``db.writer``), kept checked out of the pool
between its transactions, as ``db.readers`` keeps readers: a new one checked out only
after a failure or when the pool's ``recycle`` says the kept one is too old."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session

from cmschat import events
from cmschat.db import write_lock
from cmschat.db.writer import WriterTransaction


class Writer:
    """A process's writer connection, kept checked out between its transactions."""

    def __init__(self, engine: AsyncEngine, session_class: type[Session]) -> None:
        self.engine = engine
        self.session_class = session_class
        self.lock = write_lock.lock_of(engine)
        """SQLite's write lock (None: MariaDB)."""
        self._kept: AsyncConnection | None = None
        self.in_use: WriterTransaction | None = None
        """The transaction begun and not yet ended: one at a time."""
        self._since = 0.0
        recycle: float = getattr(engine.sync_engine.pool, "_recycle", -1)
        self._recycle = recycle if recycle > 0 else None

    def transaction(
        self, info: dict[str, Any], publisher: events.Publisher | None
    ) -> WriterTransaction:
        """One transaction, as ``async with``: committed if the block ends normally, else
        rolled back; its events published and hooks run only after the commit."""
        return WriterTransaction(self, info, publisher)

    async def connection(self) -> AsyncConnection:
        """The kept connection (checked out of the pool when none is kept, or too old)."""
        kept = self._kept
        if kept is not None and (
            self._recycle is None or time.monotonic() - self._since < self._recycle
        ):
            return kept
        self._kept = None
        if kept is not None:
            await kept.close()
        kept = await self.engine.connect()
        self._kept, self._since = kept, time.monotonic()
        return kept

    async def drop(self, connection: AsyncConnection, error: BaseException) -> None:
        """After a failed transaction: give ``connection`` back to the pool, whose reset
        rolls it back (the SQLite lock freed then, at the latest by the checkin), or
        invalidated first if the server dropped it."""
        if self._kept is connection:
            self._kept = None
        try:
            if isinstance(error, DBAPIError) and error.connection_invalidated:
                await connection.invalidate()
            elif connection.in_transaction():
                await connection.rollback()
        finally:
            await connection.close()

    async def close(self) -> None:
        """Give the kept connection back to the pool (before the engine is disposed)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            await kept.close()
