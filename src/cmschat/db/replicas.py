"""MariaDB read replicas: a read goes to one that has every commit made before it began.

Before a read, the primary is asked for its binary log position (``@@gtid_binlog_pos``,
no table touched) and a replica whether it has applied it (``MASTER_GTID_WAIT``, waiting
at most ``CMSCHAT_DATABASE__REPLICA_WAIT_MS``). The first replica that has answers the
read; if none has (replication lag, a stopped SQL thread) or none answers, the primary
does. So a reader never misses a commit that finished before the read began, whichever
instance made it: a user's own message just sent included.

A replica that fails to answer is skipped for ``RETRY_SECONDS``, so an outage costs one
failed connection attempt per that interval, not one per read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.db.readers import Readers

log = logging.getLogger(__name__)
CHECK_SECONDS = 2.0
"""A replica that does not answer the position check within this (plus the wait) is down."""
RETRY_SECONDS = 5.0

PRIMARY = "primary"
REPLICA = "replica"
BEHIND = "behind"
UNREACHABLE = "unreachable"
"""Where a read went, or why not to a replica (``counted``'s argument)."""


def _not_counted(_outcome: str) -> None:
    pass


class Replicas:
    """The replicas of one primary, tried in turn."""

    def __init__(
        self,
        primary: AsyncEngine,
        replicas: list[AsyncEngine],
        *,
        wait_seconds: float = 0.0,
        counted: Callable[[str], None] = _not_counted,
    ) -> None:
        self.primary = primary
        self.engines = replicas
        self.readers = [Readers(engine) for engine in replicas]
        """Each replica's kept read connections, for the hot GETs (``db/readers.py``)."""
        self.wait_seconds = wait_seconds
        self.counted = counted
        self._next = 0
        self._down_until = [0.0] * len(replicas)

    async def fresh(self) -> AsyncEngine | None:
        """A replica with every commit made so far, or None: read from the primary."""
        index = await self._fresh_index()
        return None if index is None else self.engines[index]

    async def fresh_readers(self) -> Readers | None:
        """``fresh``'s replica's kept connections, or None: read from the primary."""
        index = await self._fresh_index()
        return None if index is None else self.readers[index]

    async def _fresh_index(self) -> int | None:
        async with self.primary.connect() as connection:
            position = await connection.scalar(text("SELECT @@gtid_binlog_pos"))
        count = len(self.engines)
        for turn in range(count):
            index = (self._next + turn) % count
            if time.monotonic() < self._down_until[index]:
                continue
            reached = await self._reached(index, str(position or ""))
            if reached:
                self._next = (index + 1) % count
                self.counted(REPLICA)
                return index
        self.counted(PRIMARY)
        return None

    async def _reached(self, index: int, position: str) -> bool:
        """Whether replica ``index`` has applied ``position`` (within the wait)."""
        try:
            async with asyncio.timeout(CHECK_SECONDS + self.wait_seconds):
                async with self.engines[index].connect() as connection:
                    waited = await connection.scalar(
                        text("SELECT MASTER_GTID_WAIT(:position, :wait)"),
                        {"position": position, "wait": self.wait_seconds},
                    )
        except (DBAPIError, OSError, TimeoutError) as error:
            self._down_until[index] = time.monotonic() + RETRY_SECONDS
            self.counted(UNREACHABLE)
            log.warning(
                "read replica %d did not answer (%s); reading from the others or the primary "
                "for %.0f s",
                index + 1,
                type(error).__name__,
                RETRY_SECONDS,
                extra={"event.action": "db.replica_unreachable"},
            )
            return False
        if waited == 0:
            return True
        self.counted(BEHIND)
        return False

    async def dispose(self) -> None:
        """Close every replica's kept and pooled connections."""
        for readers in self.readers:
            await readers.close()
        for engine in self.engines:
            await engine.dispose()
