"""The server span of each HTTP request and WebSocket connection, while tracing.

Ours rather than ``opentelemetry-instrumentation-asgi``'s middleware: that one cost about
140 µs of CPU per request here (it decodes every header into semantic-convention
attributes, sets them twice, and records four duration and size histograms whether or not
a meter is configured), ours about a third of that. What a trace reader uses is kept: a
SERVER span per request, continuing the caller's trace (``traceparent``, or whatever
``OTEL_PROPAGATORS`` names), the method, path, scheme and status, an error status on 5xx;
the metrics middleware names it by route (``tracing.name_request_span``).
"""

from __future__ import annotations

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXCLUDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes every few seconds would drown the traces that matter."""


class TracingMiddleware:
    """Pure ASGI, outermost: every request's work happens inside its span."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer
        # The headers the propagators read (traceparent, tracestate, baggage by default):
        # only those are decoded, and none present means a new trace.
        self.fields = frozenset(
            field.encode("latin-1") for field in propagate.get_global_textmap().fields
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request or connection inside its server span."""
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in EXCLUDED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self.fields
        }
        method = scope.get("method") or kind
        # Started and made current by hand: the SDK's ``start_as_current_span`` nests three
        # generator context managers around the same calls.
        span = self.tracer.start_span(
            method,
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme") or "",
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            if kind != "http":
                await self.app(scope, receive, send)
                return

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_status)
        except Exception as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.record_exception(error)
            raise
        finally:
            context.detach(token)
            span.end()
