"""MariaDB read replicas: a read goes to one that has every commit made before it began.

Before a read, the primary is asked for its binary log position (``@@gtid_binlog_pos``,
no table touched) and a replica whether it has applied it (``MASTER_GTID_WAIT``, waiting
at most ``CMSCHAT_DATABASE__REPLICA_WAIT_MS``). The first replica that has answers the
read; if none has (replication lag, a stopped SQL thread) or none answers, the primary
does. So a reader never misses a commit that finished before the read began, whichever
instance made it: a user's own message just sent included.

A replica that fails to answer (or whose pool has no free connection in time) is skipped
for ``RETRY_SECONDS``: during an outage, only the reads that start while one check is
failing wait for it (at most ``CHECK_SECONDS``), then none for that interval.

Every URL must name one server, not a proxy in front of several: the check and the read
must reach the same replica. A primary without a binary log position (``log_bin`` off)
has nothing to compare with: every read then goes to the primary, and an error says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.db.driver_sql import Driver, Statement
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


POSITION = Statement(lambda _dialect: text("SELECT @@gtid_binlog_pos"), ())
"""The primary's binary log position: every commit it has made (no table touched)."""
REACHED = Statement(
    lambda _dialect: text("SELECT MASTER_GTID_WAIT(:position, :wait)"), ("position", "wait")
)
"""0 once a replica has applied a position (waiting up to ``wait`` s), -1 if it has not."""


class Replicas:
    """The replicas of one primary, tried in turn. Every check runs on kept connections
    (``Readers``): a read that takes the replica route costs the primary one short
    statement and the replica one, not two pool checkouts through SQLAlchemy."""

    def __init__(
        self,
        primary: Readers,
        replicas: list[AsyncEngine],
        *,
        wait_seconds: float = 0.0,
        counted: Callable[[str], None] = _not_counted,
    ) -> None:
        self.primary = primary
        self.engines = replicas
        self.readers = [Readers(engine) for engine in replicas]
        """Each replica's kept read connections (``db/readers.py``)."""
        self.wait_seconds = wait_seconds
        self.counted = counted
        self._next = 0
        self._down_until = [0.0] * len(replicas)
        self._warned_no_position = False

    async def fresh(self) -> AsyncEngine | None:
        """A replica with every commit made so far, or None: read from the primary."""
        index = await self._fresh_index(await self.position())
        return None if index is None else self.engines[index]

    async def fresh_readers(self, position: str) -> Readers | None:
        """The kept connections of a replica that has applied ``position`` (the primary's,
        read at the start of the read: ``POSITION``), or None: read from the primary."""
        index = await self._fresh_index(position)
        return None if index is None else self.readers[index]

    async def position(self) -> str:
        """The primary's binary log position now."""
        async with self.primary.reading(_position) as (_driver, position):
            return position

    async def _fresh_index(self, position: str) -> int | None:
        if not position:
            # No binary log on the primary: every replica would look up to date.
            if not self._warned_no_position:
                self._warned_no_position = True
                log.error(
                    "the primary has no binary log position (is log_bin on?): every read "
                    "goes to the primary",
                    extra={"event.action": "db.replica_position_missing"},
                )
            self.counted(PRIMARY)
            return None
        count = len(self.engines)
        for turn in range(count):
            index = (self._next + turn) % count
            if time.monotonic() < self._down_until[index]:
                continue
            if await self._reached(index, position):
                self._next = (index + 1) % count
                self.counted(REPLICA)
                return index
        self.counted(PRIMARY)
        return None

    async def _reached(self, index: int, position: str) -> bool:
        """Whether replica ``index`` has applied ``position`` (within the wait)."""

        async def check(driver: Driver) -> object:
            rows = await driver.rows(REACHED, (position, self.wait_seconds))
            return rows[0][0]

        try:
            async with asyncio.timeout(CHECK_SECONDS + self.wait_seconds):
                async with self.readers[index].reading(check) as (_driver, waited):
                    pass
        except (DBAPIError, SATimeoutError, OSError, TimeoutError) as error:
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


async def _position(driver: Driver) -> str:
    rows = await driver.rows(POSITION, ())
    return str(rows[0][0] or "") if rows else ""
