"""Bounded request cost: a body size limit and a JSON shape check, before any parsing.

Pure ASGI, so it sees the body as it streams: a declared ``Content-Length`` over the
limit is refused before a byte is read, and a chunked body is counted as it arrives and
refused as soon as it passes the limit (the rest is never read into memory). JSON bodies
(at most the limit, so a bounded buffer) are then checked for nesting depth and member
count with one linear scan, because the standard parser recurses per level and the
validation error of a many-keyed object copies it per error (measured: a 300,000-key
login body cost 5 s of event-loop time).

Uploads stream into storage under their own limit (``attachments.api``), so they pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmschat.jsonshape import shape_problem

MAX_JSON_DEPTH = 32
"""Deeper than any body of the API (the deepest is 3); a WebSocket frame may reuse it."""
MAX_JSON_MEMBERS = 1000
"""Object members (keys) in one body, summed over every object; the API needs a dozen."""

# The one route whose body is a file: it has its own streaming limit.
UNLIMITED_ROUTES = re.compile(r"/api/v1/rooms/[^/]+/attachments")


class BodyTooLarge(HTTPException):
    """The body passed the limit while the app was reading it.

    An HTTPException, because FastAPI turns any other error raised while it reads the
    body into a 400; this one reaches the app's error handlers as a 413.
    """

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def json_shape_problem(body: bytes | str) -> str | None:
    """Why this JSON body is too deep or has too many keys for the API, or None."""
    return shape_problem(body, max_depth=MAX_JSON_DEPTH, max_members=MAX_JSON_MEMBERS)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = _error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_json(content_type: str) -> bool:
    # No type at all may still be parsed as JSON by a lenient route: checked as JSON too.
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in ("", "application/json") or kind.endswith("+json")


def _size_text(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (413) and JSON too deep or wide (422)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        unlimited: Callable[[str], object] = UNLIMITED_ROUTES.fullmatch,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.unlimited = unlimited
        self.too_large = f"request bodies are at most {_size_text(max_bytes)}"

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Check one HTTP request's body on its way in (other scopes pass).

        A request with nothing to check gets the next layer's coroutine itself: this layer
        is no frame in its await chain (``MetricsMiddleware`` explains why that counts)."""
        if scope["type"] != "http" or self.unlimited(scope["path"]):
            return self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            # A request with neither header has no body (RFC 9112, 6.3): nothing to limit
            # or check, so a GET is not read ahead of its route.
            return self.app(scope, receive, send)
        return self._checked(scope, receive, send, headers, declared)

    async def _checked(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        declared: bytes | None,
    ) -> None:
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, "too_large", self.too_large)
            return
        if _is_json(headers.get(b"content-type", b"").decode("latin-1")):
            await self._buffered(scope, receive, send)
        else:
            await self._counted(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole (bounded) body, check its shape, then hand it on in one piece."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, "too_large", self.too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_shape_problem(body)
        if problem is not None:
            await _refuse(send, 422, "invalid", problem)
            return
        first: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([first], receive), send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the body through as it streams, stopping once it passes the limit."""
        size = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal size
            if size > self.max_bytes:
                raise BodyTooLarge(self.too_large)
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge(self.too_large)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(send, 413, "too_large", self.too_large)


TOO_LARGE_RESPONSE = {
    "description": "the body is over CMSCHAT_MAX_BODY_BYTES",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def document_body_limit(app: FastAPI) -> None:
    """Add the ``413`` every operation with a request body may answer to the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    operation.setdefault("responses", {}).setdefault("413", TOO_LARGE_RESPONSE)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that returns ``messages`` first, then whatever the server sends."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
