"""OpenTelemetry tracing: off by default, switched on by the standard ``OTEL_*`` variables.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, or
``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
keeps it off. Spans go by OTLP/HTTP to a collector, Jaeger, Tempo or a vendor's agent
(Datadog, CloudWatch via ADOT). Traced: HTTP requests (FastAPI), each WebSocket frame
handled, SQL statements (by fingerprint, from the engine events in db_metrics), Redis
commands and each publish to the broker.
While tracing, a request's generated id is its trace id (see middleware.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:  # the SDK and instrumentation load only when tracing is on
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor
    from starlette.types import ASGIApp

T = TypeVar("T")
# Probes and scrapes every few seconds would drown the traces that matter.
EXCLUDED_URLS = "healthz,readyz,metrics"

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
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "cmschat"}))
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(processor)
        self._redis = False

    def instrument_app(self, app: FastAPI) -> None:
        """Trace every HTTP request of ``app`` (its WebSockets: ``traced_asgi``).

        The plain ASGI middleware, not FastAPI's instrumentation: that one finds each
        request's route by matching it against every route again (a fifth of tracing's
        cost per request); the metrics middleware, which learns the route from routing
        itself, names the span instead (``name_request_span``).
        """
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(OpenTelemetryMiddleware, **self._asgi_options())

    def traced_asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` with a span per connection, as ``instrument_app`` traces HTTP requests
        (for the WebSocket stack, which bypasses FastAPI's middleware)."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(app, **self._asgi_options())

    def _asgi_options(self) -> dict[str, Any]:
        # One span per request, not one more per ASGI message sent or received: those
        # triple the HTTP spans and say nothing the request span does not.
        return {
            "excluded_urls": EXCLUDED_URLS,
            "default_span_details": _unrouted_span,
            "tracer_provider": self.provider,
            "exclude_spans": ["receive", "send"],
        }

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


@contextlib.contextmanager
def span(name: str, **attributes: str | int) -> Iterator[None]:
    """A span around our own work while tracing; nothing otherwise."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield


def _unrouted_span(scope: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The request span's name until routing is known: the method (or ``websocket``)."""
    return str(scope.get("method") or scope["type"]), {}


def name_request_span(method: str, route: str) -> None:
    """Name the current request span by its route template, once routing has matched."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)


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


SQL_COUNT = "db.statements"
SQL_MILLISECONDS = "db.statements_ms"


def count_sql(seconds: float) -> None:
    """Count a statement too quick for a span of its own on the span it ran in."""
    current = trace.get_current_span()
    if not current.is_recording():
        return
    # Only the SDK's spans (what is recording here) can be read back.
    known = getattr(current, "attributes", None) or {}
    current.set_attribute(SQL_COUNT, int(known.get(SQL_COUNT, 0)) + 1)
    milliseconds = float(known.get(SQL_MILLISECONDS, 0.0)) + seconds * 1000
    current.set_attribute(SQL_MILLISECONDS, round(milliseconds, 3))


async def traced(name: str, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` inside a span named ``name``."""
    with span(name):
        return await work
