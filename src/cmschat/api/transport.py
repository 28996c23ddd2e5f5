"""uvicorn's httptools HTTP/1.1 protocol, writing header names as the app spells them.

httptools parses in C and spends about a third less of the interpreter per served page than
h11 (docs/performance.md, "The server under the app"), but uvicorn's protocol on top of it
lower-cases every response header name, and some clients look names up case-sensitively
(the contract smoke reads ``X-Content-Type-Options`` from urllib's headers). Here only the
response head is written differently: the app's names as given, the date header and the
framing headers the server adds spelled as h11 spelled them (``Transfer-Encoding: chunked``,
``Connection: close``), so the bytes on the wire are those ``serve`` sent under h11. The
state uvicorn keeps from the head (content length, chunking, keep-alive, 100-continue) is
set exactly as its own code sets it; the body, the parser and the connection are uvicorn's.

It relies on uvicorn's internals (the cycle's fields, ``on_headers_complete`` making the
cycle): pyproject.toml pins uvicorn's minor version.
"""

from __future__ import annotations

import logging

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

# What h11 wrote when the server, not the app, framed the response or ended the connection.
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"
_NO_BODY = frozenset({204, 304})


class CaseKeepingCycle(RequestResponseCycle):
    """uvicorn's request/response cycle whose response head keeps the app's header names,
    and which answers an HTTP/1.0 request's streamed response unchunked."""

    close_delimited = False
    """The body has no length and the client speaks HTTP/1.0, which knows no chunks (RFC
    9112, 7.1): its end is the connection's (uvicorn never keeps a 1.0 connection open)."""

    async def send(self, message: ASGISendEvent) -> None:
        """Write the head here, and a close-delimited body; any other body is uvicorn's."""
        if self.response_started:
            if self.close_delimited and not self.response_complete:
                await self._send_until_close(message)
            else:
                await super().send(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if message["type"] != "http.response.start":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
            )
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        scope = self.scope
        # cmschat writes its own access line and disables uvicorn's logger
        # (observability.logging): its arguments (the path quoted again) go unbuilt then.
        if self.access_log and self.access_logger.isEnabledFor(logging.INFO):
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status_code,
            )
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        headers = [*self.default_headers, *message.get("headers", ())]
        # Each pattern is one character class, so a search of all the names (values) joined
        # finds what uvicorn's search of each finds: two searches, not two per header.
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif lowered == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif lowered == b"connection":
                tokens = [token.lower().strip() for token in value.split(b",")]
                if b"close" in tokens:
                    self.keep_alive = False
                    has_connection_close = True
            content += (name, b": ", value, b"\r\n")
        if self.chunked_encoding is None and status_code not in _NO_BODY:
            if scope["http_version"] == "1.0":
                self.close_delimited = scope["method"] != "HEAD"
            else:
                # h11 framed a HEAD answer as the GET's (chunked, with no body sent);
                # uvicorn's body writing skips HEAD before it looks at chunking, so only
                # the head differs.
                if scope["method"] != "HEAD":
                    self.chunked_encoding = True
                content.append(_CHUNKED)
        if not self.keep_alive and not has_connection_close:
            content.append(_CLOSE)
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    async def _send_until_close(self, message: ASGISendEvent) -> None:
        """The body as it comes; the connection's close ends it."""
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
            )
        self.transport.write(message.get("body", b""))
        if not message.get("more_body", False):
            self.response_complete = True
            self.message_event.set()
            self.transport.close()
            self.on_response()


class CaseKeepingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose every request runs in a :class:`CaseKeepingCycle`."""

    def on_headers_complete(self) -> None:
        """Make the cycle as uvicorn does, then give it the head writing above.

        The subclass adds no state, so changing the class of the fresh cycle (its task not
        started yet) is the whole difference; copying uvicorn's 50-line method would not be.
        """
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:
            self.cycle.__class__ = CaseKeepingCycle

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol, then let go of the parser.

        The parser holds this protocol's callbacks and this protocol holds the parser: after
        the upgrade nothing else refers to either, but the pair (and the request's scope)
        would wait for the cycle collector, ~1 KiB per idle WebSocket meanwhile (measured,
        docs/performance.md). h11's protocol has no such loop.
        """
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]
