"""A dependency that is down: a clear answer for the user, one log line for the operator.

When the database, Redis or the disk fails, every request fails the same way. Each should
get a 503 (or 507 for a full disk) with ``Retry-After`` and a stable code a client can act
on, not a 500; and the log should say once, then once per interval with a count, what is
down — not print a stack trace per request (MariaDB down once produced 4.5 MB in 10 s).

A MariaDB transaction that collided with another (a deadlock or lock-wait timeout) is
answered the same way but is no outage: the database is up and the next try will most
likely pass. It is counted and logged as a conflict, apart from the failed dependencies an
operator must act on. SQLite's ``database_busy`` stays an outage: a write that waited past
the write lock's bound, or a CLI writer holding the lock, says the instance is short of
write capacity, which an operator must act on.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa

from cmschat.observability import instruments as m

log = logging.getLogger("cmschat.outage")
conflict_log = logging.getLogger("cmschat.db.conflict")

LOG_INTERVAL_SECONDS = 30.0
"""The same outage is logged at most once per interval (with how often it was seen)."""


@dataclass(frozen=True)
class Outage:
    """What a failed dependency means for the caller."""

    code: str
    status: int
    retry_after: int
    message: str
    conflict: bool = False
    """A collision between transactions, not a failed dependency."""


DATABASE = Outage("database_unavailable", 503, 5, "the database is unavailable; try again soon")
DATABASE_BUSY = Outage("database_busy", 503, 1, "the database is busy; try again")
DATABASE_POOL = Outage(
    "database_pool_exhausted",
    503,
    1,
    "every database connection of this server is in use; try again",
)
"""No pooled connection came free in time: the database may be fine, this process is short
of connections (``CMSCHAT_DATABASE__POOL_SIZE``, ``POOL_OVERFLOW``) or holds them too long."""
DATABASE_CONFLICT = Outage(
    "database_conflict", 503, 1, "the change collided with another one; try again", conflict=True
)
STORAGE_FULL = Outage("storage_full", 507, 60, "the server's storage is full; try again later")
BROKER = Outage("broker_unavailable", 503, 5, "the event broker is unavailable; try again soon")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_CONFLICT_ERRNOS = {1205, 1213}
"""MariaDB's lock-wait timeout and deadlock: InnoDB rolled this transaction back (1213)
or this statement (1205, the request's unit of work then rolls back the rest)."""


_LIBRARY_ERRORS = (sa.SQLAlchemyError, RedisError, OSError, sqlite3.Error)
"""Errors whose implicit ``__context__`` is followed: drivers and pools raise their own
while handling each other's. A bug (a ``KeyError`` raised while handling a Redis outage)
is not: it stays a 500 with its traceback instead of passing for the outage."""


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what caused it: explicit causes always, implicit ones of libraries."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        implicit = current.__context__ if isinstance(current, _LIBRARY_ERRORS) else None
        current = current.__cause__ or implicit
    return seen


def is_conflict(error: BaseException) -> bool:
    """Whether ``error`` itself (or what it was explicitly raised from) is a MariaDB
    deadlock or lock-wait timeout. Not the implicit ``__context__``: an error raised while
    handling a deadlock (a pool timeout, a plain bug) is that error, not a conflict."""
    for candidate in (error, error.__cause__):
        if isinstance(candidate, sa.DBAPIError) and _errno(candidate.orig) in _CONFLICT_ERRNOS:
            return True
    return False


def classify(error: BaseException) -> Outage | None:
    """The outage ``error`` shows, or None for a bug (which stays a logged 500)."""
    if is_conflict(error):
        return DATABASE_CONFLICT
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return STORAGE_FULL
        if isinstance(cause, sqlite3.OperationalError):
            text = str(cause).lower()
            if "disk is full" in text or "disk i/o error" in text:
                return STORAGE_FULL
            if "locked" in text or "busy" in text:
                return DATABASE_BUSY
        if isinstance(cause, RedisConnectionError | RedisTimeoutError):
            return BROKER
    if isinstance(error, sa.TimeoutError):  # no pooled connection came free in time
        return DATABASE_POOL
    if isinstance(error, sa.DBAPIError) and (
        error.connection_invalidated or isinstance(error, sa.OperationalError | sa.InterfaceError)
    ):
        return DATABASE
    return None


def _errno(error: BaseException | None) -> int | None:
    """The MySQL protocol's error number a driver error carries first, if any."""
    first = error.args[0] if error is not None and error.args else None
    return first if isinstance(first, int) else None


_OUTAGE_REPORT = (
    log,
    logging.ERROR,
    "%s: %d request(s) refused since the last report; last error %s in %s",
    "outage",
)
_CONFLICT_REPORT = (
    conflict_log,
    logging.WARNING,
    "%s: %d request(s) refused since the last report, each having collided with another "
    "transaction (deadlock or lock wait; the database is up); last error %s in %s",
    "database_conflict",
)
"""Each kind's report: its logger, level, message and ``event.action``."""


class OutageLog:
    """Logs an outage when first seen, then at most once per interval, with the count."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._state: dict[str, tuple[float, int]] = {}
        """Per outage code: when it was last logged, and how often seen since."""

    def seen(self, outage: Outage, error: BaseException, where: str) -> None:
        """Count one failure (and log it if the interval has passed)."""
        counter = m.DATABASE_CONFLICTS if outage.conflict else m.OUTAGE_ERRORS
        counter.labels(code=outage.code).inc()
        now = time.monotonic()
        last, count = self._state.get(outage.code, (0.0, 0))
        count += 1
        if outage.code not in self._state or now - last >= self._interval:
            logger, level, report, action = _CONFLICT_REPORT if outage.conflict else _OUTAGE_REPORT
            logger.log(
                level,
                report,
                outage.code,
                count,
                type(error).__name__,
                where,
                extra={"event.action": action, "error.code": outage.code},
            )
            self._state[outage.code] = (now, 0)
        else:
            self._state[outage.code] = (last, count)


outages = OutageLog()
"""The process's outage log: every transport reports through it."""
