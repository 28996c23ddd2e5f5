"""The two hottest routes, history pages and sends, served without FastAPI's routing,
dependency solving and response-model validation (issue 16, point 7).

``GET`` and ``POST /api/v1/rooms/{room_id}/messages`` keep their FastAPI declarations in
``chat/api.py``: OpenAPI lists them from there, and every request this module does not take
goes there. This route is tried first and takes only the requests whose inputs are
plainly valid (a room id, a page query of digits, a JSON body the schema accepts); anything
else (a bad id, a stray query parameter, a body the schema refuses) is left to FastAPI,
so every refusal is FastAPI's own answer. ``tests/api/test_hot_routes.py`` checks that both
answer alike.

What FastAPI's dependencies do is done here by the same functions (``api/deps.py``): the
unit of work (read-only), the sign-in, the password-change check. A history page
needs no unit of work: it signs in and reads on a bare pooled connection with the driver
(``deps.reading_signed_in``), no ORM session and no ``BEGIN``/``COMMIT``, the token's row
and the page in one trip. Domain errors
propagate to the app's exception handlers (``api/errors.py``) as a route's do; the
middleware (request id, security headers, metrics by route template, tracing, access log,
body limit) wraps this route as it wraps the others.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmschat.accounts.models import User
from cmschat.api.deps import get_current_user, get_signed_in, reading_signed_in, reads_only_unit
from cmschat.api.responses import JSONBytes
from cmschat.chat import api as chat_api
from cmschat.chat.caches import HotCaches
from cmschat.chat.messages import reads
from cmschat.chat.schemas import MessageCreate
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS
from cmschat.db.driver_sql import Driver, Row, Statement
from cmschat.db.replicas import POSITION
from cmschat.errors import CmschatError

TEMPLATE = "/api/v1/rooms/{room_id}/messages"
_PATH = re.compile(r"/api/v1/rooms/([1-9][0-9]{0,17})/messages")
"""Ids up to 18 digits: always within BIGINT, so no range check is needed."""
_DIGITS = re.compile(rb"[0-9]{1,18}")
_PAGE_KEYS = frozenset({b"before", b"after", b"limit"})
DEFAULT_LIMIT = 50
PASSED_ON = "cmschat.hot_route_passed"
"""Set in the scope of a request this route handed to FastAPI: it matches no more."""
_PAGE = "cmschat.page"

Page = tuple[int | None, int | None, int]


def page_query(raw: bytes) -> Page | None:
    """``(before, after, limit)`` from a query string of plain digits; None for anything
    else (FastAPI answers those, with its own messages)."""
    found: dict[bytes, int] = {}
    if raw:
        for part in raw.split(b"&"):
            key, equals, value = part.partition(b"=")
            if not equals or key not in _PAGE_KEYS or key in found:
                return None
            if _DIGITS.fullmatch(value) is None:
                return None
            found[key] = int(value)
    limit = found.get(b"limit", DEFAULT_LIMIT)
    if not 1 <= limit <= reads.MAX_PAGE:
        return None
    return found.get(b"before"), found.get(b"after"), limit


def _is_json(scope: Scope) -> bool:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower() == b"application/json"
    return False


def draft_of(body: bytes) -> MessageCreate | None:
    """The body as a send, if it is JSON the schema accepts; None: FastAPI answers it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return MessageCreate.model_validate(data)
    except ValidationError:
        return None


@asynccontextmanager
async def signed_in(
    request: Request, context: AppContext
) -> AsyncIterator[tuple[AsyncSession, User]]:
    """The request's unit of work and its caller: ``SessionDep`` and ``CurrentUser``."""
    read_only = reads_only_unit(request.method, request.scope.get("endpoint"))
    async with context.db.unit_of_work(ANONYMOUS, read_only=read_only) as session:
        caller = await get_signed_in(request, session, context)
        yield session, await get_current_user(caller)


async def history(request: Request, context: AppContext, room_id: int, page: Page) -> Response:
    """``chat_api.history``'s work on a pooled connection, without an ORM session or a
    transaction through the engine: the token's row and the page in one trip to the
    driver (``reading_signed_in``'s ``along``), the membership when it is not cached,
    then the page's rows written as JSON (on MariaDB, after the rows without a stored tail
    are read by id: ``page_built``)."""
    before, after, limit = page
    if context.db.replicas is not None:
        return await _history_on_a_replica(request, context, room_id, page)

    def page_read(driver: Driver) -> tuple[Statement, Row, Row]:
        statement, parameters = reads.page_read(
            driver, room_id=room_id, before=before, after=after, limit=limit
        )
        return statement, parameters, reads.without_rows(parameters)

    async with reading_signed_in(request, context, along=page_read) as (driver, caller, found):
        body = await _page_json(driver, found, caller.user_id, room_id, page, context.caches)
    return JSONBytes(body)


async def _page_json(
    driver: Driver,
    found: list[Row],
    user_id: int,
    room_id: int,
    page: Page,
    caches: HotCaches | None,
) -> bytes:
    """The page's rows as JSON once the membership is checked (``reads.history_json_of``)."""
    before, after, limit = page
    return await reads.history_json_of(
        driver,
        found,
        user_id=user_id,
        room_id=room_id,
        before=before,
        after=after,
        limit=limit,
        caches=caches,
    )


async def _history_on_a_replica(
    request: Request, context: AppContext, room_id: int, page: Page
) -> Response:
    """``history`` with read replicas: the token checked on the primary, then the page read
    on a replica that has every commit made so far, or on the primary (db/replicas.py)."""
    before, after, limit = page
    replicas = context.db.replicas
    assert replicas is not None  # noqa: S101 - checked by the caller

    def position_read(_driver: Driver) -> tuple[Statement, Row, Row]:
        return POSITION, (), ()

    # The primary's position read in the token's trip: the page needs every commit before it.
    async with reading_signed_in(request, context, along=position_read) as (_d, caller, found):
        user_id = caller.user_id
    position = str(found[0][0] or "") if found else ""
    replica = await replicas.fresh_readers(position)
    readers = replica or context.db.readers

    async def page_rows(driver: Driver) -> list[Row]:
        statement, parameters = reads.page_read(
            driver, room_id=room_id, before=before, after=after, limit=limit
        )
        return await driver.rows(statement, parameters)

    # A replica's answers do not fill the caches (their rule assumes the primary).
    caches = None if replica is not None else context.caches
    async with readers.reading(page_rows, harmless=CmschatError) as (driver, found):
        body = await _page_json(driver, found, user_id, room_id, page, caches)
    return JSONBytes(body)


async def send_message(
    request: Request, context: AppContext, room_id: int, draft: MessageCreate
) -> Response:
    """``chat_api.send_message``'s work: 201, or 200 for a repeated ``client_id``.

    Admitted before signing in, as the declared route is: a full server refuses a send
    before any database work (a token's read included), and a refused request holds no
    place (nor does any request once answered, signed in or not)."""
    async with context.admission.sends("http"), signed_in(request, context) as (_, user):
        view, created = await context.sends.send(user=user, room_id=room_id, draft=draft)
    return JSONBytes(view.json, status_code=201 if created else 200)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for a request whose body was already read: the body once, then on."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class HotRoute(BaseRoute):
    """Tried before every other route; FastAPI's routes answer whatever it passes on."""

    path = TEMPLATE
    """Read as the route template by the metrics, the access log and the request span."""

    def __init__(self, fallback: ASGIApp) -> None:
        self.fallback = fallback
        """The app's router: a request passed on is routed again, past this route."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """FULL for a history page or a send with plainly valid inputs; NONE otherwise."""
        if scope["type"] != "http" or PASSED_ON in scope:
            return Match.NONE, {}
        method = scope["method"]
        if method == "GET":
            page = page_query(scope["query_string"])
            if page is None:
                return Match.NONE, {}
            endpoint: Any = chat_api.history
        elif method == "POST" and _is_json(scope):
            page, endpoint = None, chat_api.send_message
        else:
            return Match.NONE, {}
        found = _PATH.fullmatch(get_route_path(scope))
        if found is None:
            return Match.NONE, {}
        params = {"room_id": found[1]}
        return Match.FULL, {"endpoint": endpoint, "path_params": params, "route": self, _PAGE: page}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or pass it on to FastAPI's route."""
        context: AppContext = scope["app"].state.context
        request = Request(scope, receive)
        room_id = int(scope["path_params"]["room_id"])
        page: Page | None = scope[_PAGE]
        if page is not None:
            response = await history(request, context, room_id, page)
        else:
            body = await request.body()
            draft = draft_of(body)
            if draft is None:
                scope[PASSED_ON] = True
                await self.fallback(scope, _replaying(body, receive), send)
                return
            response = await send_message(request, context, room_id, draft)
        await response(scope, receive, send)
