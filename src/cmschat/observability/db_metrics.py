"""Timing every SQL statement through the engine's events, and logging the slow ones.

Hooked on the engine, not in the services: every query of every unit of work is measured,
the code that issues it stays unaware. Statements are logged by fingerprint (literals
replaced, whitespace collapsed), never with their parameters: those hold password
hashes, token digests and message bodies.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool

from cmschat.observability import instruments as m
from cmschat.observability import sql_tally, tracing
from cmschat.observability.series import HistogramSeries, Level

log = logging.getLogger("cmschat.db.slow")
_IN_USE, _WAITING = Level(m.DB_POOL_IN_USE), Level(m.DB_POOL_WAITING)

OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK"})
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_LISTS = re.compile(r"\((?:\s*\?\s*,)+\s*\?\s*\)")
_SPACE = re.compile(r"\s+")
STATEMENT_LOG_CHARS = 2000


@functools.lru_cache(maxsize=2048)
def operation_of(statement: str) -> str:
    """The statement's verb, from a small fixed set (a label value); cached like
    ``fingerprint``, the ORM repeats the same statements."""
    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    if verb == "WITH":
        return "SELECT"
    return verb if verb in OPERATIONS else "OTHER"


@functools.lru_cache(maxsize=2048)
def fingerprint(statement: str) -> str:
    """The statement with literals and placeholder lists made uniform.

    Cached: the ORM hands over the same few hundred compiled statements again and again,
    and the regular expressions cost more than the rest of the timing put together.
    """
    text = _LITERALS.sub("?", statement.replace("%s", "?"))
    text = _LISTS.sub("(...)", text)
    return _SPACE.sub(" ", text).strip()


def _count_checkouts(pool: Pool) -> None:
    """Count connections in use, and checkouts in progress and their time: waits show
    when the pool runs dry.

    SQLAlchemy has an event after a checkout but none before it may wait, so the pool's
    own getter is wrapped, on this pool only (and on the pool ``dispose`` makes in its
    place). The connections in use are counted there too, and where the pool takes one
    back, rather than by ``checkout``/``checkin`` listeners: a ``checkout`` listener sends
    every checkout through the pool's reconnect-and-retry path (a tenth of what the SQL
    metrics cost per request on SQLite, issue 12 point 9), and a connection that failed
    to open was ``checkin`` without a ``checkout``, taking the gauge below zero. Both
    gauges are ``Level``s: without a lock in one process (series.py).
    """
    get_connection = pool._do_get
    return_connection = pool._do_return_conn
    recreate = pool.recreate
    wait = HistogramSeries(m.DB_POOL_WAIT)
    waiting_up, waiting_down = _WAITING.up, _WAITING.down
    in_use_up, in_use_down = _IN_USE.up, _IN_USE.down

    def counted() -> Any:
        waiting_up()
        began = time.perf_counter()
        try:
            connection = get_connection()
        finally:
            waiting_down()
            wait.observe(time.perf_counter() - began)
        in_use_up()
        return connection

    def returned(record: Any) -> None:
        try:
            return_connection(record)
        finally:
            in_use_down()

    def recreated() -> Pool:
        replacement = recreate()
        _count_checkouts(replacement)
        return replacement

    pool._do_get = counted  # type: ignore[method-assign]
    pool._do_return_conn = returned  # type: ignore[method-assign]
    pool.recreate = recreated  # type: ignore[method-assign]


def instrument_engine(engine: AsyncEngine, *, slow_ms: int, span_ms: float = 0) -> None:
    """Time the engine's statements, count its pooled connections in use and waited for.

    While tracing, a statement that took at least ``span_ms`` becomes a span of its own
    (made when it ends, with its real start time); quicker ones are only counted on the
    enclosing span (``db.statements``, ``db.statements_ms``). A span costs the Python SDK
    tens of microseconds, and a send runs a dozen sub-millisecond statements: one span
    each was most of tracing's overhead (docs/performance.md) and tells a reader less
    than the count does. ``span_ms=0`` gives every statement its span.

    Statements are timed around the dialect's own execute methods, wrapped on this
    engine's dialect only, not through the engine's ``before``/``after_cursor_execute``
    events: an engine listener switches SQLAlchemy to dispatching every connection event
    (a dozen empty listener walks per statement; on MariaDB nothing else listens), and
    the two listeners cost more than the timing itself. The wrapped methods are what those
    events bracket, errors included.
    """
    sync_engine = engine.sync_engine
    slow_seconds = slow_ms / 1000
    span_seconds = span_ms / 1000

    system = sync_engine.dialect.name
    # The labelled series, looked up once: ``labels()`` takes a lock and builds a key each
    # call, and a send runs a dozen statements; written without the per-call checks.
    query_time = {
        op: HistogramSeries(m.DB_QUERY.labels(operation=op)) for op in (*OPERATIONS, "OTHER")
    }

    def ended(statement: str, elapsed: float) -> None:
        operation = operation_of(statement)
        query_time[operation].observe(elapsed)
        if tracing.enabled():
            # No span for BEGIN: two per request that say nothing a trace reader needs.
            if elapsed >= span_seconds and operation != "BEGIN":
                tracing.sql_span(operation, fingerprint(statement), system, elapsed)
            else:
                sql_tally.count_sql(elapsed)
        if elapsed >= slow_seconds:
            m.DB_SLOW.labels(operation=operation).inc()
            _log_slow(statement, operation, elapsed)

    def failed(statement: str, elapsed: float, error: BaseException) -> None:
        if tracing.enabled():
            tracing.sql_span(
                operation_of(statement), fingerprint(statement), system, elapsed, error=error
            )

    dialect = sync_engine.dialect
    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        setattr(dialect, name, _timed(getattr(dialect, name), ended, failed))
    # The hottest statements skip the dialect's methods (db/driver_sql.py, whose
    # ``_OBSERVER`` names this attribute; the two layers do not import each other).
    dialect.cmschat_statement_observer = (ended, failed)  # type: ignore[attr-defined]
    _count_checkouts(sync_engine.pool)


def _timed(
    execute: Callable[..., None],
    ended: Callable[[str, float], None],
    failed: Callable[[str, float, BaseException], None],
) -> Callable[..., None]:
    """``execute`` (a dialect's ``do_execute*``, which take the cursor and the statement
    first) timed: ``ended`` with the time taken, or ``failed`` with the error too."""

    def timed(cursor: Any, statement: str, *rest: Any) -> None:
        started = time.perf_counter()
        try:
            execute(cursor, statement, *rest)
        except BaseException as error:
            failed(statement or "", time.perf_counter() - started, error)
            raise
        ended(statement, time.perf_counter() - started)

    return timed


def _log_slow(statement: str, operation: str, elapsed: float) -> None:
    shape = fingerprint(statement)
    log.warning(
        "slow query: %s %.0f ms",
        operation,
        elapsed * 1000,
        extra={
            "event.action": "db.slow_query",
            "event.duration": int(elapsed * 1e9),
            "db.operation": operation,
            "db.statement": shape[:STATEMENT_LOG_CHARS],
            "db.fingerprint": hashlib.sha256(shape.encode()).hexdigest()[:16],
        },
    )
