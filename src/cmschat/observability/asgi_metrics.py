"""Counting HTTP requests and WebSocket traffic at the ASGI layer, outside the domain code.

Requests are labelled by their route *template* (``/api/v1/rooms/{room_id}``), never the raw
path: a path carries ids, and a label per id would grow without bound. A path no route
matches is ``<unmatched>``; the static web client is ``/*``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmschat.observability import instruments as m
from cmschat.observability import sql_tally, tracing
from cmschat.observability.logging import route_var, routed_template, scope_var
from cmschat.observability.minutes import WINDOW
from cmschat.observability.outages import classify
from cmschat.observability.series import CountSeries, HistogramSeries, Level

UNMATCHED = "<unmatched>"
LOGIN_ROUTE = "/api/v1/auth/login"
UPLOAD_ROUTE = "/api/v1/rooms/{room_id}/attachments"
# Close codes the gateway uses, as reasons a person reads on a dashboard.
CLOSE_REASONS = {
    1000: "normal",
    1001: "idle",
    1008: "auth_failed",
    1012: "restart",
    1013: "slow_client",
}
ERROR_BODY_LIMIT = 4096


def route_template(scope: Scope) -> str:
    """The template of the route that handles ``scope`` (matched again only if need be)."""
    routed = routed_template(scope)
    if routed is not None:
        return routed
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            if isinstance(candidate, Mount):
                return candidate.path + "/*"
            return str(getattr(candidate, "path", UNMATCHED))
    return UNMATCHED


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return code if isinstance(code, str) and code.isidentifier() else "unknown"


def _count_special(route: str, method: str, status: int, error_body: bytes) -> None:
    """The few requests that are also business events: logins and uploads."""
    if method != "POST":
        return
    if route == LOGIN_ROUTE:
        if status == 401:
            m.LOGIN_FAILURES.inc()
        elif status == 429:
            m.LOGIN_THROTTLED.inc()
    elif route == UPLOAD_ROUTE:
        if status < 400:
            m.UPLOADS.labels(result="stored", reason="").inc()
        else:
            m.UPLOADS.labels(result="refused", reason=_error_code(error_body)).inc()


_Series = tuple[CountSeries, HistogramSeries]
_series: dict[tuple[str, str, int], _Series] = {}
_SERIES_MAX = 4096


def _request_series(method: str, route: str, status: int) -> _Series:
    """The request counter's and duration histogram's labelled series of one kind of answer.

    Kept after the first lookup: ``labels()`` takes a lock, checks the label values and
    builds a key every call, twice per request; and written without the per-call checks
    (series.py). The values are the same series objects the metric holds (in multiprocess
    mode too: prometheus-client re-opens their files itself after a fork). Bounded by
    methods x route templates x statuses; if that bound is ever passed, lookups go to
    ``labels()`` again.
    """
    key = (method, route, status)
    found = _series.get(key)
    if found is None:
        found = (
            CountSeries(m.HTTP_REQUESTS.labels(method=method, route=route, status=str(status))),
            HistogramSeries(m.HTTP_DURATION.labels(method=method, route=route)),
        )
        if len(_series) < _SERIES_MAX:
            _series[key] = found
    return found


class MetricsMiddleware:
    """Pure ASGI: times and counts every HTTP request and WebSocket connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Serve one connection, counting it.

        Not a coroutine itself: it hands back the coroutine that serves the connection, so
        this layer is one frame in the await chain, not two (every time the request waits,
        on the database say, each frame of the chain is suspended and resumed again)."""
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        return self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        error_body = b""
        route: str | None = None
        route_var.set(None)
        scope_var.set(scope)

        async def counting_send(message: Message) -> None:
            nonlocal status, error_body, route
            if message["type"] == "http.response.start":
                status = message["status"]
                route = route_template(scope)
                route_var.set(route)
                # Before the response goes out: the span may end with it.
                tracing.name_request_span(scope["method"], route)
            elif status >= 400 and len(error_body) < ERROR_BODY_LIMIT:
                error_body += message.get("body", b"")
            await send(message)

        _IN_FLIGHT_UP()
        untally = sql_tally.tally_request() if tracing.enabled() else None
        try:
            await self.app(scope, receive, counting_send)
        except Exception as error:
            outage = classify(error)  # answered by the request middleware, outside this one
            status = 500 if outage is None else outage.status
            if outage is None:
                m.HTTP_UNHANDLED.inc()
            raise
        finally:
            if untally is not None:
                untally()
            _IN_FLIGHT_DOWN()
            if route is None:  # no response started: routing may have matched since
                route = route_template(scope)
                route_var.set(route)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            counted, timed = _request_series(method, route, status)
            counted.inc()
            elapsed = time.perf_counter() - started
            timed.observe(elapsed)
            WINDOW.request(route, status, elapsed)
            _count_special(route, method, status, error_body)
            # route_var is left set: the access log line, written outside, reads it.

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def counting_send(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if kind == "websocket.send" and message.get("text") is not None:
                m.frame_written(message["text"])
            elif kind == "websocket.accept":
                accepted = True
                m.WS_OPEN.inc()
                WINDOW.websocket_opened()
                m.WS_CONNECTIONS.inc()
            elif kind == "websocket.close":
                code = int(message.get("code", 1000))
                m.WS_CLOSES.labels(reason=CLOSE_REASONS.get(code, "other")).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                m.WS_OPEN.dec()
                WINDOW.websocket_closed()


_IN_FLIGHT = Level(m.HTTP_IN_FLIGHT)
_IN_FLIGHT_UP, _IN_FLIGHT_DOWN = _IN_FLIGHT.up, _IN_FLIGHT.down
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
