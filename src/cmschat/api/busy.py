"""A send posted while the process is full, refused before any middleware (issue 16 point 3).

Under overload most posts are refused; passing each through every middleware, FastAPI and
its error layers, and writing an access line for it, cost a quarter of the server's core
for a tenth of the sends (docs/performance.md, "where the server's core goes"). Here the
app's first step looks at the method and path alone and, when admission is full, answers
from bytes built once: the same 503 ``busy`` + ``Retry-After`` the route would answer, with
a request id, ``no-store`` and the security headers the request middleware adds. The body
is not read: the server discards it and the connection stays open for the next request.

What the full stack would have done is done here cheaply: the refusal is counted in
``cmschat_sends_refused_total`` (by the admission), in the HTTP request counter and
duration histogram under the route's template; instead of one access line per refusal, a
summary line per interval says how many were refused. Taken only when the answer is the
stack's own. Browsers send ``Origin`` with every post, same-origin ones included, so the
door takes them too and adds CORS headers through the app's own policy (``api/cors.py``),
as the stack would for that origin; HSTS is added as its middleware would (HTTPS only,
after the trusted proxies' headers are applied). A body declared over
``CMSCHAT_MAX_BODY_BYTES`` goes through the stack for its 413: retrying it after a
``busy`` could never succeed. Not traced: a refusal makes no span.

An unread body is not buffered: once the answer is complete, uvicorn (httptools) discards the
body's bytes as they arrive and serves the next request on the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from typing import Any, cast

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cmschat.admission import BUSY, Admission
from cmschat.api.cors import cors_options
from cmschat.api.hsts import hsts_value
from cmschat.observability import instruments as m
from cmschat.observability.middleware import SECURITY_HEADERS
from cmschat.observability.minutes import WINDOW
from cmschat.settings import Settings

log = logging.getLogger("cmschat.http")
ROUTE = "/api/v1/rooms/{room_id}/messages"
_PATH = re.compile(r"/api/v1/rooms/[1-9][0-9]{0,17}/messages")
"""The hot route's: a valid room id (anything else goes through the stack, as before)."""
SUMMARY_SECONDS = 1.0
"""Refusals are logged as one line per this many seconds, with their count."""


def busy_body() -> bytes:
    """The contract's error shape, as the domain error handler writes it."""
    return json.dumps({"error": {"code": "busy", "message": BUSY}}, separators=(",", ":")).encode()


class RefusalLog:
    """Counts refusals and writes one summary line per interval in which there were some."""

    def __init__(self, *, interval: float = SUMMARY_SECONDS) -> None:
        self.interval = interval
        self.count = 0
        self.started = 0.0

    def refused(self) -> None:
        """One more refusal; the first of an interval schedules that interval's line."""
        self.count += 1
        if self.count == 1:
            self.started = time.perf_counter()
            asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Write the summary of the refusals counted since the last one (if any)."""
        count, self.count = self.count, 0
        if not count:
            return
        elapsed = time.perf_counter() - self.started
        log.info(
            "refused %d POST %s 503 busy in %.1f s",
            count,
            ROUTE,
            elapsed,
            extra={
                "event.action": "http.refused",
                "event.reason": "busy",
                "http.request.method": "POST",
                "url.path": ROUTE,
                "http.response.status_code": 503,
                "event.duration": int(elapsed * 1e9),
            },
        )


class BusyRefusal:
    """Answers ``POST /api/v1/rooms/{id}/messages`` with 503 ``busy`` while admission is full."""

    def __init__(self, admission: Admission, settings: Settings) -> None:
        self.admission = admission
        self.max_body = settings.max_body_bytes
        self.log = RefusalLog()
        body = busy_body()
        self.body = {"type": "http.response.body", "body": body}
        self.head = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"retry-after", str(admission.retry_after).encode()),
            (b"Cache-Control", b"no-store"),
            *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
        ]
        self.hsts: bytes | None = None
        if settings.hsts_max_age:
            self.hsts = hsts_value(
                settings.hsts_max_age, include_subdomains=settings.hsts_include_subdomains
            ).encode()
        self.counted = m.HTTP_REQUESTS.labels(method="POST", route=ROUTE, status="503")
        self.timed = m.HTTP_DURATION.labels(method="POST", route=ROUTE)
        self.answer: ASGIApp = self._answer
        if settings.cors_origins:  # the origin's headers, as the stack would add them
            self.answer = CORSMiddleware(self.answer, **cors_options(settings.cors_origins))
        if settings.trusted_proxies:  # the scheme (for HSTS) and client as the stack sees them
            proxied = ProxyHeadersMiddleware(
                cast(Any, self.answer), trusted_hosts=settings.trusted_proxies
            )
            self.answer = cast(ASGIApp, proxied)

    def takes(self, scope: Scope) -> bool:
        """Whether this request is a send to refuse now (cheapest checks first)."""
        if not self.admission.full or scope["method"] != "POST":
            return False
        if _PATH.fullmatch(scope["path"]) is None:
            return False
        for name, value in scope["headers"]:
            if name == b"content-length":
                return not value.isdigit() or int(value) <= self.max_body
        return True

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        self.admission.refuse("http")
        headers = [*self.head, (b"X-Request-ID", os.urandom(16).hex().encode())]
        if self.hsts is not None and scope.get("scheme") == "https":
            headers.append((b"Strict-Transport-Security", self.hsts))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send(self.body)
        elapsed = time.perf_counter() - started
        self.counted.inc()
        self.timed.observe(elapsed)
        WINDOW.request(ROUTE, 503, elapsed)
        self.log.refused()
