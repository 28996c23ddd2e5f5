"""SQL statements counted on the span they ran in, while tracing, instead of spanned.

A statement quicker than ``CMSCHAT_METRICS__TRACE_SQL_MS`` gets no span of its own
(db_metrics.py); it is counted on the innermost span of ours it ran in (a request, a
WebSocket frame, a batch of sends) as ``db.statements`` and ``db.statements_ms``, written
once when that span ends: setting two attributes per statement was a tenth of tracing's
cost on a send.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.trace import Span

SQL_COUNT = "db.statements"
SQL_MILLISECONDS = "db.statements_ms"


class _Tally:
    """The quick statements run in one span, written on it once."""

    __slots__ = ("count", "seconds", "span")

    def __init__(self, span: Span) -> None:
        self.span: Span | None = span
        self.count = 0
        self.seconds = 0.0

    def taken(self) -> dict[str, int | float]:
        """The attributes to write, once: statements after this go on the span directly."""
        self.span = None
        if not self.count:
            return {}
        return {SQL_COUNT: self.count, SQL_MILLISECONDS: round(self.seconds * 1000, 3)}


_tally: ContextVar[_Tally | None] = ContextVar("cmschat_sql_tally", default=None)


@contextlib.contextmanager
def tallied(span: Span) -> Iterator[None]:
    """Count the statements run in ``span`` and write them on it as it ends."""
    tally = _Tally(span)
    token = _tally.set(tally)
    try:
        yield
    finally:
        _tally.reset(token)
        counted = tally.taken()
        if counted:
            span.set_attributes(counted)


@contextlib.contextmanager
def counted_for(span: Span, context: contextvars.Context) -> Iterator[None]:
    """Count the statements run here (by another task, for ``span``) on ``span``'s tally
    in ``context``, the context it runs in, so the span is written once, with all of them."""
    tally = context.get(_tally)
    if tally is None or tally.span is not span:
        with tallied(span):
            yield
        return
    token = _tally.set(tally)
    try:
        yield
    finally:
        _tally.reset(token)


def _nothing() -> None:
    """Nothing to undo."""


def count_sql(seconds: float) -> None:
    """Count a statement too quick for a span of its own on the span it ran in."""
    current = trace.get_current_span()
    tally = _tally.get()
    if tally is not None and tally.span is current:
        tally.count += 1
        tally.seconds += seconds
        return
    if not current.is_recording():
        return
    # A span not of our making (a WebSocket connection's): one statement at a time. Only
    # the SDK's spans (what is recording here) can be read back.
    known = getattr(current, "attributes", None) or {}
    current.set_attribute(SQL_COUNT, int(known.get(SQL_COUNT, 0)) + 1)
    milliseconds = float(known.get(SQL_MILLISECONDS, 0.0)) + seconds * 1000
    current.set_attribute(SQL_MILLISECONDS, round(milliseconds, 3))


def tally_request() -> Callable[[], None]:
    """Count the SQL of the HTTP request starting here until its response starts (see
    ``tracing.name_request_span``); returns what to call when the request is over."""
    current = trace.get_current_span()
    if not current.is_recording():
        return _nothing
    tally = _Tally(current)
    token = _tally.set(tally)

    def done() -> None:  # a request that failed before its response: write them now
        _tally.reset(token)
        counted = tally.taken()
        if counted and current.is_recording():
            current.set_attributes(counted)

    return done


def taken_for(span: Span) -> dict[str, int | float]:
    """The counts of the request ``span`` to write on it now (its response is starting)."""
    tally = _tally.get()
    return tally.taken() if tally is not None and tally.span is span else {}
