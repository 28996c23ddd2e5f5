"""OpenTelemetry tracing: off by default, switched on by the standard ``OTEL_*`` variables.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, or
``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
keeps it off. Spans go by OTLP/HTTP to a collector, Jaeger, Tempo or a vendor's agent
(Datadog, CloudWatch via ADOT). Traced: HTTP requests (FastAPI), each WebSocket frame
handled, SQL statements (by fingerprint, from the engine events in db_metrics), Redis
commands, each publish to the broker, and each group commit of sends (``batch_span``).
While tracing, a request's generated id is its trace id (see middleware.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from cmschat.observability import sql_tally

if TYPE_CHECKING:  # the SDK and instrumentation load only when tracing is on
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor
    from starlette.types import ASGIApp

T = TypeVar("T")
LINKS_PER_SPAN = 256
"""A batch span links every send of its batch (group_commit.MAX_BATCH); the SDK's default
keeps 128. ``OTEL_SPAN_LINK_COUNT_LIMIT`` still wins when set."""

_tracer: Tracer | None = None


def requested(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def otlp_processor() -> SpanProcessor:
    """Batches spans to the OTLP/HTTP exporter (endpoint, headers from OTEL_* variables)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter())


class Tracing:
    """The tracer provider of one application, and the instrumentation hooked to it."""

    def __init__(self, processor: SpanProcessor) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "cmschat"}))
        links = None if "OTEL_SPAN_LINK_COUNT_LIMIT" in os.environ else LINKS_PER_SPAN
        self.provider = TracerProvider(resource=resource, span_limits=SpanLimits(max_links=links))
        self.provider.add_span_processor(processor)
        self._redis = False

    def instrument_app(self, app: FastAPI) -> None:
        """Trace every HTTP request of ``app`` (trace_middleware.py; the metrics
        middleware names each request's span by its route). Its WebSockets: ``traced_asgi``."""
        from cmschat.observability.trace_middleware import TracingMiddleware

        app.add_middleware(TracingMiddleware, tracer=self.provider.get_tracer("cmschat.http"))

    def traced_asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` with a span per connection, as ``instrument_app`` traces HTTP requests
        (for the WebSocket stack, which bypasses FastAPI's middleware)."""
        from cmschat.observability.trace_middleware import TracingMiddleware

        return TracingMiddleware(app, tracer=self.provider.get_tracer("cmschat.http"))

    def start(self, *, redis: bool) -> None:
        """Trace our own work, SQL (db_metrics' engine events) and Redis from now on."""
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        global _tracer
        self._redis = redis
        if redis:
            RedisInstrumentor().instrument(tracer_provider=self.provider)
        _tracer = self.provider.get_tracer("cmschat")

    def stop(self) -> None:
        """Send what is buffered and unhook (the Redis instrumentation is process-wide)."""
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        global _tracer
        _tracer = None
        if self._redis:
            RedisInstrumentor().uninstrument()
        self.provider.shutdown()


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """Tracing as the OTEL_* variables ask, or None (the default: off)."""
    if not requested(os.environ if environ is None else environ):
        return None
    return Tracing(otlp_processor())


def name_request_span(method: str, route: str) -> None:
    """Name the current request span by its route template, once routing has matched, and
    write the SQL counted so far on it (the tracing middleware ends it with the response)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{method} {route}")
        current.set_attributes({"http.route": route, **sql_tally.taken_for(current)})


def enabled() -> bool:
    """Whether spans are being recorded (so callers can skip preparing their attributes)."""
    return _tracer is not None


def sql_span(
    operation: str,
    statement: str,
    system: str,
    seconds: float,
    *,
    error: BaseException | None = None,
) -> None:
    """A client span for one SQL statement that has just ended after ``seconds`` (its
    fingerprint, never its parameters)."""
    if _tracer is None:
        return
    ended = time.time_ns()
    span = _tracer.start_span(
        f"{operation} {system}",
        kind=SpanKind.CLIENT,
        attributes={"db.system": system, "db.operation": operation, "db.statement": statement},
        start_time=ended - int(seconds * 1e9),
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end(end_time=ended)


def waiting_span() -> Span | None:
    """The span a caller is in while it hands work to another task (a send to the group
    commit): its request's or WebSocket frame's, recording or not (a sampled-out request's
    send stays out of the traces); None when not tracing."""
    if _tracer is None:
        return None
    current = trace.get_current_span()
    return current if current.get_span_context().is_valid else None


class Waiter(Protocol):
    """One caller of work done for several (a send in a group commit)."""

    span: Span | None
    """From ``waiting_span`` when it queued."""
    context: contextvars.Context
    """Its context as it queued (its SQL tally)."""


@contextlib.contextmanager
def batch_span(
    name: str, callers: Sequence[Waiter], **attributes: str | int
) -> Iterator[Span | None]:
    """Work done at once for ``callers``, traced.

    For one caller (every send when they come one at a time) the work is the caller's own:
    its SQL and publish are children of the caller's span and counted on it, as if done in
    its request. For several, a new trace (OpenTelemetry's pattern for batches): a root span
    linked to each caller's span, and each caller's span linked back to it, so a reader goes
    from a slow request to its batch and from the batch to every request in it. Yields the
    span the work is counted on (None when not tracing)."""
    if _tracer is None:
        yield None
        return
    if len(callers) == 1 and callers[0].span is not None:
        # A span and two links per send cost a third of tracing's share of a send, and say
        # nothing a single send's own span cannot.
        caller = callers[0].span
        token = otel_context.attach(trace.set_span_in_context(caller, _ROOT))
        try:
            with sql_tally.counted_for(caller, callers[0].context):
                yield caller
        finally:
            otel_context.detach(token)
        return
    waiting = [
        caller.span for caller in callers if caller.span is not None and caller.span.is_recording()
    ]
    with (
        _tracer.start_as_current_span(
            name,
            context=_ROOT,  # never a child of whichever request started the writer
            links=[Link(caller.get_span_context()) for caller in waiting],
            attributes=attributes,
        ) as batch,
        sql_tally.tallied(batch),
    ):
        here = batch.get_span_context()
        for caller in waiting:
            caller.add_link(here)
        yield batch


_ROOT = otel_context.Context()
"""An empty context: a span started in it is the root of a new trace."""


async def traced(name: str, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` inside a span named ``name`` (its SQL counted on it) while tracing.

    The span made and made current by hand: the SDK's ``start_as_current_span`` nests three
    generator context managers, a sixth of a span's cost here."""
    tracer = _tracer
    if tracer is None:
        return await work
    current = tracer.start_span(name)
    token = otel_context.attach(trace.set_span_in_context(current))
    try:
        with sql_tally.tallied(current):
            return await work
    except Exception as error:
        current.set_status(Status(StatusCode.ERROR, type(error).__name__))
        current.record_exception(error)
        raise
    finally:
        otel_context.detach(token)
        current.end()
