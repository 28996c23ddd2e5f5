"""``GET /api/v1/ws`` as the app serves it: the origin check, the auth frame, then the
signed-in connection (``endpoint.ClientSocket``).

A plain ASGI app, not a FastAPI route: the app hands it ``/api/v1/ws`` before FastAPI's
middleware and routing (``app.CmschatApp``), whose frames and ``AsyncExitStack``s would
otherwise stay alive for the socket's whole life, at a cost per idle connection
(docs/performance.md, section 1).
"""

from __future__ import annotations

import contextlib
import uuid

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from cmschat.accounts.schemas import UserRead
from cmschat.api.hsts import hsts_value
from cmschat.context import AppContext
from cmschat.observability.logging import client_address_var, request_id_var
from cmschat.observability.middleware import SECURITY_HEADERS, request_ids
from cmschat.realtime.connections import Connection
from cmschat.settings import Settings
from cmschat.websocket.caller import Caller
from cmschat.websocket.endpoint import ClientSocket
from cmschat.websocket.handshake import CLOSE_POLICY, authenticate, origin_allowed

PATH = "/api/v1/ws"
SHUTTING_DOWN = {
    "error": {"code": "shutting_down", "message": "this server is shutting down; connect again"}
}


class Gateway:
    """The ASGI app of ``/api/v1/ws``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one WebSocket connection."""
        await websocket_endpoint(WebSocket(scope, receive=receive, send=send))


async def websocket_endpoint(websocket: WebSocket) -> None:
    """``GET /api/v1/ws``: the real-time protocol (see contract.md)."""
    context: AppContext = websocket.app.state.context
    if context.draining and "websocket.http.response" in websocket.scope.get("extensions", {}):
        # An HTTP 503 rather than the 403 a refused handshake gets: a proxy may try the
        # upgrade on another instance (nginx: proxy_next_upstream http_503) and a client
        # knows to come back, where a 403 says it is forbidden (docs/deploy.md).
        await websocket.send_denial_response(shutting_down(websocket.scope, context.settings))
        return
    if context.draining or not origin_allowed(websocket, context):
        await websocket.close(code=CLOSE_POLICY)
        return
    await websocket.accept()
    # Every frame's work runs in this task or tasks it starts, so audit events and log
    # lines of the connection carry its address and one id for the whole connection.
    client_address_var.set(websocket.client.host if websocket.client else None)
    request_id_var.set("ws-" + uuid.uuid4().hex)
    client = await _sign_in(websocket, context)
    if client is not None:
        with contextlib.suppress(
            WebSocketDisconnect
        ):  # gone before ``ready`` (a shutdown, a client)
            await client.run()


def shutting_down(scope: Scope, settings: Settings) -> JSONResponse:
    """The 503 a draining server answers an upgrade with, with the headers every HTTP
    answer of the stack carries (request id, security headers, no-store, HSTS over TLS):
    the upgrade passes none of the HTTP middleware that adds them."""
    refusal = JSONResponse(SHUTTING_DOWN, status_code=503, headers={"Retry-After": "1"})
    request_id, _ = request_ids(scope)
    headers = [("X-Request-ID", request_id), ("Cache-Control", "no-store")]
    headers += SECURITY_HEADERS.items()
    if settings.hsts_max_age and scope.get("scheme") == "wss":
        value = hsts_value(
            settings.hsts_max_age, include_subdomains=settings.hsts_include_subdomains
        )
        headers.append(("Strict-Transport-Security", value))
    refusal.raw_headers += [(name.encode(), value.encode()) for name, value in headers]
    return refusal


async def _sign_in(websocket: WebSocket, context: AppContext) -> ClientSocket | None:
    """The signed-in connection, or None (closed 1008). In a frame of its own: the ORM rows
    and the session of the sign-in are let go once it returns; the connection keeps plain
    fields only."""
    signed_in, resume = await authenticate(websocket, context)
    if signed_in is None:
        return None
    user, token = signed_in.user, signed_in.token
    conn = Connection(
        user_id=user.id,
        queue_size=context.settings.realtime.send_queue_size,
        token_id=token.id,
        role=user.role,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
    )
    greeting = UserRead.model_validate(user).model_dump(mode="json")
    return ClientSocket(websocket, context, Caller.of(user), conn, resume=resume, greeting=greeting)
