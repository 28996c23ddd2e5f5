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
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.observability import instruments as m
from cmschat.observability import tracing

log = logging.getLogger("cmschat.db.slow")

OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK"})
_STARTED = "cmschat_query_started"
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_LISTS = re.compile(r"\((?:\s*\?\s*,)+\s*\?\s*\)")
_SPACE = re.compile(r"\s+")
STATEMENT_LOG_CHARS = 2000


def operation_of(statement: str) -> str:
    """The statement's verb, from a small fixed set (a label value)."""
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


def instrument_engine(engine: AsyncEngine, *, slow_ms: int) -> None:
    """Time the engine's statements and count its pooled connections in use."""
    sync_engine = engine.sync_engine
    slow_seconds = slow_ms / 1000

    system = sync_engine.dialect.name

    def before(conn: Any, _cursor: Any, stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        operation = operation_of(stmt)
        # No span for BEGIN: two per request that say nothing a trace reader needs (its
        # time still goes to the histogram); spans cost tracing most of its overhead.
        span = (
            tracing.start_sql_span(operation, fingerprint(stmt), system)
            if tracing.enabled() and operation != "BEGIN"
            else None
        )
        conn.info.setdefault(_STARTED, []).append((time.perf_counter(), span, operation))

    def after(conn: Any, _cursor: Any, stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        started = conn.info.get(_STARTED)
        if not started:
            return
        began, span, operation = started.pop()
        tracing.end_span(span)
        elapsed = time.perf_counter() - began
        m.DB_QUERY.labels(operation=operation).observe(elapsed)
        if elapsed >= slow_seconds:
            m.DB_SLOW.labels(operation=operation).inc()
            _log_slow(stmt, operation, elapsed)

    def failed(context: Any) -> None:
        started = context.connection.info.get(_STARTED) if context.connection else None
        if started:
            tracing.end_span(started.pop()[1], error=context.original_exception)

    def checkout(*_args: Any) -> None:
        m.DB_POOL_IN_USE.inc()

    def checkin(*_args: Any) -> None:
        m.DB_POOL_IN_USE.dec()

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", failed)
    event.listen(sync_engine.pool, "checkout", checkout)
    event.listen(sync_engine.pool, "checkin", checkin)


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
