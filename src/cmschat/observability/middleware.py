"""Outermost layer of every HTTP request: request id, security headers, access log."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmschat.observability.logging import (
    client_address_var,
    client_request_id_var,
    current_trace_id,
    log_access,
    request_id_var,
    route_var,
    user_id_var,
)
from cmschat.observability.outages import classify, outages

log = logging.getLogger("cmschat.http")
GENERIC_MESSAGE = "something went wrong on our side; quote the request id"

REQUEST_ID_HEADER = "x-request-id"
# Short, and starting with a letter or digit: it lands in logs and audit exports (CSV),
# where a leading "=", "+", "-" or "@" could be read as a formula.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

# Canonical capitalisation on the wire: header names are case-insensitive, but some
# clients and scripts compare them as written.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


# Written on every response: encoded once (name, its lower case, value).
_SECURITY_BYTES = tuple(
    (name.encode(), name.lower().encode(), value.encode())
    for name, value in SECURITY_HEADERS.items()
)
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()
_OURS_NAMES = {
    False: frozenset({_REQUEST_ID_NAME}),
    True: frozenset({_REQUEST_ID_NAME, b"cache-control"}),
}
_NO_STORE = (b"Cache-Control", b"no-store")
_SECURITY_PAIRS = tuple((name, value) for name, _, value in _SECURITY_BYTES)
_SET_BY_US = _OURS_NAMES[True] | {lower for _, lower, _ in _SECURITY_BYTES}
"""Every header name this layer writes or replaces, lower case."""


def request_ids(scope: Scope) -> tuple[str, str | None]:
    """Our own id for the request, and the caller's ``X-Request-ID`` if short and safe.

    The caller's id is a correlation hint kept beside ours: it never becomes the request
    id, so nobody can forge or collide ids in the logs and the audit trail.
    """
    given = b""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_NAME:
            given = value  # the last one, as a dict of the headers kept it
    # The trace id when tracing; else 32 hex digits as uuid4().hex wrote, at a sixth of its cost.
    ours = current_trace_id(None) or os.urandom(16).hex()
    if not given:
        return ours, None
    text = given.decode("latin-1")
    return ours, text if _VALID_REQUEST_ID.fullmatch(text) else None


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path in ("/healthz", "/readyz")


def _with_headers(
    given: Iterable[tuple[bytes, bytes]], request_id: str, *, no_store: bool
) -> list[tuple[bytes, bytes]]:
    """The response headers plus ours: request id and caching replace the route's,
    security headers the route set itself (a stricter CSP, say) are kept."""
    # ASGI allows any iterable; read twice below. Starlette's responses give lists.
    raw = given if isinstance(given, list) else list(given)
    replaced = _OURS_NAMES[no_store]
    lowered = [name.lower() for name, _ in raw]
    ours = [(b"X-Request-ID", request_id.encode())]
    if no_store:
        ours.append(_NO_STORE)
    if _SET_BY_US.isdisjoint(lowered):  # the usual answer: none of ours set by the route
        return [*raw, *ours, *_SECURITY_PAIRS]
    headers = [pair for pair, lower in zip(raw, lowered, strict=True) if lower not in replaced]
    present = {lower for lower in lowered if lower not in replaced}
    headers += ours
    headers += [(name, value) for name, lower, value in _SECURITY_BYTES if lower not in present]
    return headers


class RequestMiddleware:
    """Pure ASGI so it wraps everything, including errors no handler caught."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request (other scopes pass straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, client_request_id = request_ids(scope)
        request_token = request_id_var.set(request_id)
        client_request_token = client_request_id_var.set(client_request_id)
        user_token = user_id_var.set(None)
        address_token = client_address_var.set((scope.get("client") or (None,))[0])
        started = time.perf_counter()
        status = 500
        response_started = False
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = _with_headers(
                    message.get("headers", []), request_id, no_store=_is_api(path)
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as error:
            outage = classify(error)
            answer: tuple[int, str, str, list[tuple[bytes, bytes]]]
            if outage is None:
                log.exception("unhandled error in %s %s", scope["method"], path)
                answer = (500, "internal_error", GENERIC_MESSAGE, [])
            else:
                outages.seen(outage, error, f"{scope['method']} {route_var.get() or path}")
                retry = [(b"retry-after", str(outage.retry_after).encode())]
                answer = (outage.status, outage.code, outage.message, retry)
            if not response_started:
                status_code, code, message, extra_headers = answer
                body = json.dumps(
                    {"error": {"code": code, "message": message, "request_id": request_id}}
                ).encode()
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": status_code,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            *extra_headers,
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            log_access(
                log,
                "%s %s %s",
                (scope["method"], path, status),
                {
                    "http.request.method": scope["method"],
                    "url.path": route_var.get() or "<unrouted>",
                    "url.original": path,
                    "http.response.status_code": status,
                    "event.duration": int((time.perf_counter() - started) * 1e9),
                    "client.ip": (scope.get("client") or (None,))[0],
                },
                # Made the trace id when tracing (request_ids), and still current here.
                trace_id=request_id,
            )
            client_address_var.reset(address_token)
            user_id_var.reset(user_token)
            client_request_id_var.reset(client_request_token)
            request_id_var.reset(request_token)
