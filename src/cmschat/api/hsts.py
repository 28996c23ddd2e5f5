"""``Strict-Transport-Security`` on responses to requests that arrived over HTTPS.

The scheme is the ASGI scope's: ``https`` when the server itself terminates TLS, or when
uvicorn's proxy-headers middleware (installed for ``CMSCHAT_TRUSTED_PROXIES`` only) took
it from a trusted proxy's ``X-Forwarded-Proto``. Over plain HTTP the header means nothing
to browsers (RFC 6797 section 7.2), and an untrusted client cannot ask for it.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"strict-transport-security"


def hsts_value(max_age: int, *, include_subdomains: bool) -> str:
    """The header's value for these settings."""
    return f"max-age={max_age}" + ("; includeSubDomains" if include_subdomains else "")


class HstsMiddleware:
    """Add ``Strict-Transport-Security`` to every HTTPS response that lacks one."""

    def __init__(self, app: ASGIApp, *, max_age: int, include_subdomains: bool = False) -> None:
        self.app = app
        self.value = hsts_value(max_age, include_subdomains=include_subdomains).encode()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Pass one request on, adding the header to its response if it came over HTTPS.

        A request it leaves alone gets the next layer's coroutine itself: this layer is no
        frame in its await chain (``MetricsMiddleware`` explains why that counts)."""
        if scope["type"] != "http" or scope.get("scheme") != "https":
            return self.app(scope, receive, send)
        return self._https(scope, receive, send)

    async def _https(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if all(name.lower() != HEADER for name, _ in headers):
                    headers.append((b"Strict-Transport-Security", self.value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_hsts)
