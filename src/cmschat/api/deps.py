"""Request dependencies: the unit of work, the caller, and their account role.

Account roles (admin, agent, member) are checked here: routes declare ``CurrentUser``,
``StaffUser`` or ``AdminUser`` and never compare roles themselves. Room roles (owner,
moderator, member) are checked by the services through ``cmschat.chat.permissions``.

The request's context: its unit of work opens as ``system:anonymous`` (``get_session``);
``_sign_in`` is the one place that names the caller as its actor, once their token
checks out. The clock comes from the database the unit of work belongs to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts import auth
from cmschat.accounts.models import Role, User
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS, set_actor
from cmschat.db.driver_sql import Driver, Row, Statement
from cmschat.db.session import is_read_only
from cmschat.errors import CmschatError, Forbidden, Unauthorized
from cmschat.observability.logging import user_id_var

# Ids are BIGINT; anything outside is simply not found, not a database error.
MAX_ID = 2**63 - 1
ResourceId = Annotated[int, Path(ge=1, le=MAX_ID)]


def get_context(request: Request) -> AppContext:
    """The running app's context."""
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


READING_METHODS = frozenset({"GET", "HEAD"})
"""Requests whose unit of work only reads: on SQLite they never queue behind a writer."""
_READING_ENDPOINTS: set[Callable[..., Any]] = set()
_WRITING_ENDPOINTS: set[Callable[..., Any]] = set()

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def reads_only(endpoint: Endpoint) -> Endpoint:
    """Mark a route whose request unit of work only reads whatever its method: one that
    hands its write to a transaction of its own (the group commit of sends)."""
    _READING_ENDPOINTS.add(endpoint)
    return endpoint


def audits_reads(endpoint: Endpoint) -> Endpoint:
    """Mark a GET route whose unit of work writes: a read of sensitive data (the audit
    trail, a user's or a room's details) that leaves an audit line."""
    _WRITING_ENDPOINTS.add(endpoint)
    return endpoint


async def get_session(request: Request, context: Context) -> AsyncIterator[AsyncSession]:
    """One unit of work per request, committed before the response is sent.

    It acts as anonymous until ``get_signed_in`` knows who the caller is. A GET's (unless
    ``audits_reads``) or a ``reads_only`` route's is read-only (``db.write_lock``): a write
    in it is a bug the engine refuses on SQLite.
    """
    read_only = reads_only_unit(request.method, request.scope.get("endpoint"))
    async with context.db.unit_of_work(ANONYMOUS, read_only=read_only) as session:
        yield session


def reads_only_unit(method: str, endpoint: object) -> bool:
    """Whether a request to ``endpoint`` works in a read-only unit of work."""
    return endpoint in _READING_ENDPOINTS or (
        method in READING_METHODS and endpoint not in _WRITING_ENDPOINTS
    )


# scope="function": commit when the route returns, so a failed commit is the response.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def client_of(request: Request) -> auth.Client:
    """Where the request comes from (proxy headers are resolved by the middleware)."""
    return auth.Client(
        address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``; Unauthorized without one."""
    # The first ``authorization`` header, as ``request.headers.get`` finds it (ASGI header
    # names are lower case), without building Starlette's headers object.
    header = ""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "sign in first: send Authorization: Bearer <token>", code="not_authenticated"
        )
    return token.strip()


async def _sign_in(session: AsyncSession, request: Request, context: AppContext) -> auth.SignedIn:
    """Check the bearer token, then name its user as the actor of ``session``'s unit of work."""
    signed_in = await auth.authenticate(
        session,
        token=bearer_token(request),
        policy=context.settings.auth,
        token_key=context.token_key,
        clock=context.clock,
    )
    # Before the unit of work flushes: the token's refreshed last_used_at is theirs too.
    set_actor(session, signed_in.actor, name=signed_in.user.username)
    return signed_in


async def get_signed_in(request: Request, session: SessionDep, context: Context) -> auth.SignedIn:
    """The caller, even one who still has to change their password; the request acts for them."""
    signed_in = await _sign_in(session, request, context)
    if is_read_only(session) and session.is_modified(signed_in.token):
        # The token's periodic last_used_at refresh: a write of its own, queued like any
        # other, instead of upgrading the reader's transaction.
        session.expunge(signed_in.token)
        # Its connection goes back first: a request holding two at once would drain the
        # pool under load, every request waiting for the second while holding the first.
        await session.commit()
        await _refresh_last_used(context, signed_in)
    if request.method not in READING_METHODS:
        # The sign-in check is its own transaction: the route's work starts a new one, so
        # slow work in a route (hashing a password, waiting for the group commit) holds no
        # connection, no place in SQLite's writers' queue and no snapshot.
        await session.commit()
    user_id_var.set(signed_in.user.id)
    return signed_in


async def _refresh_last_used(context: AppContext, signed_in: auth.SignedIn) -> None:
    """Store the token's new last_used_at in a short write unit of work of its own."""
    token = signed_in.token
    await _store_last_used(
        context, signed_in.actor, signed_in.user.username, token.id, token.last_used_at
    )


async def _store_last_used(
    context: AppContext, actor: str, username: str, token_id: int, last_used_at: datetime
) -> None:
    async with context.db.unit_of_work(actor, actor_name=username) as writer:
        await auth.touch(writer, token_id=token_id, last_used_at=last_used_at)


Along = Callable[[Driver], tuple[Statement, Row, Row]]
"""A read to share the token's trip (``reading_signed_in``): its statement, its parameters,
and those it runs with when the token's row will surely be refused (to read nothing)."""


@asynccontextmanager
async def reading_signed_in(
    request: Request, context: AppContext, *, along: Along | None = None
) -> AsyncIterator[tuple[Driver, auth.Caller, list[Row]]]:
    """A read-only request's connection, caller and ``along``'s rows (none without it),
    checked as ``CurrentUser`` is, with no ORM session and no transaction through the
    engine (the hot GET's, ``chat.hot_routes``).

    ``along`` runs right after the token's row in the same trip to the driver (one trip to
    SQLite's thread, not two; on MariaDB still a round trip each). Its rows are read before
    the caller is checked, so only use them once this has yielded: a revoked or expired
    token raises here, on the very request after its revocation, as it always did. For a
    token with no row, a revoked one or a disabled user it reads with its refused
    parameters, so a bad token costs no page.

    A due ``last_used_at`` refresh is written as ``get_signed_in`` writes it: its own short
    write unit of work, with the reading connection given back first.
    """
    token, parameters = auth.token_read(bearer_token(request), token_key=context.token_key)

    async def signing_in(driver: Driver) -> tuple[list[Row], list[Row]]:
        if along is None:
            return await driver.rows(token, parameters), []
        statement, wanted, refused = along(driver)

        def page_parameters(ran: list[list[Row]]) -> Row:
            return wanted if auth.may_sign_in(ran[0]) else refused

        found, read = await driver.steps(
            [(token, parameters, False), (statement, page_parameters, False)]
        )
        return found, read

    readers = context.db.readers
    async with readers.reading(signing_in, harmless=CmschatError) as (driver, (found, read)):
        caller = auth.caller_of(driver, found, policy=context.settings.auth, clock=context.clock)
        if caller.refreshed is None:
            _signed_in_as(caller)
            yield driver, caller, read
            return
    await _store_last_used(
        context, caller.actor, caller.username, caller.token_id, caller.refreshed
    )
    _signed_in_as(caller)
    async with readers.reading(_nothing, harmless=CmschatError) as (driver, _):
        yield driver, caller, read


async def _nothing(_driver: Driver) -> None:
    """No first read (``Readers.reading``)."""


def _signed_in_as(caller: auth.Caller) -> None:
    """Name the caller in the logs; Forbidden until a forced password change is done."""
    user_id_var.set(caller.user_id)
    if caller.must_change_password:
        raise _password_change_required()


def _password_change_required() -> Forbidden:
    return Forbidden(
        "change your password first (POST /api/v1/me/password)", code="password_change_required"
    )


SignedIn = Annotated[auth.SignedIn, Depends(get_signed_in)]


async def get_current_user(signed_in: SignedIn) -> User:
    """The caller, once any forced password change is done."""
    if signed_in.user.must_change_password:
        raise _password_change_required()
    return signed_in.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> User:
    """The caller, who must be an admin."""
    if user.role is not Role.admin:
        raise Forbidden("admins only", code="admin_required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]


async def get_staff_user(user: CurrentUser) -> User:
    """The caller, who must be an admin or an agent (canned replies, read-only)."""
    if user.role not in (Role.admin, Role.agent):
        raise Forbidden("admins and agents only", code="staff_required")
    return user


StaffUser = Annotated[User, Depends(get_staff_user)]


async def get_user_outside_request_transaction(request: Request, context: Context) -> User:
    """The caller, checked in a short transaction of its own.

    For routes whose service runs its own transactions (uploads): holding the request's
    transaction open meanwhile would, on SQLite, keep the write lock they need.
    """
    async with context.db.unit_of_work(ANONYMOUS) as session:
        signed_in = await _sign_in(session, request, context)
    user_id_var.set(signed_in.user.id)
    return await get_current_user(signed_in)


UserOwnTransactions = Annotated[User, Depends(get_user_outside_request_transaction)]
