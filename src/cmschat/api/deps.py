"""Request dependencies: the unit of work, the caller, and who may do what.

Authorisation lives here, in one place: routes declare ``CurrentUser`` or ``AdminUser``
and never check roles themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts import auth
from cmschat.accounts.models import Role, User
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS
from cmschat.db.session import finish
from cmschat.errors import Forbidden, Unauthorized
from cmschat.observability.logging import user_id_var

# Ids are BIGINT; anything outside is simply not found, not a database error.
MAX_ID = 2**63 - 1
ResourceId = Annotated[int, Path(ge=1, le=MAX_ID)]


def get_context(request: Request) -> AppContext:
    """The running app's context."""
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    """One unit of work per request, committed before the response is sent."""
    async with context.db.session(ANONYMOUS) as session:
        try:
            yield session
        except BaseException as exc:
            await finish(session, exc)
            raise
        await finish(session, None)


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
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "sign in first: send Authorization: Bearer <token>", code="not_authenticated"
        )
    return token.strip()


async def get_signed_in(request: Request, session: SessionDep, context: Context) -> auth.Session:
    """The caller's session, even one that still has to change its password."""
    signed_in = await auth.authenticate(
        session,
        token=bearer_token(request),
        policy=context.settings.auth,
        token_key=context.token_key,
        clock=context.clock,
    )
    # The sign-in check is its own transaction: the route's work starts a new one, so slow
    # work in a route before its first query (hashing a password) holds no connection —
    # on SQLite, the one connection everybody shares.
    await session.commit()
    user_id_var.set(signed_in.user.id)
    return signed_in


SignedIn = Annotated[auth.Session, Depends(get_signed_in)]


async def get_current_user(signed_in: SignedIn) -> User:
    """The caller, once any forced password change is done."""
    if signed_in.user.must_change_password:
        raise Forbidden(
            "change your password first (POST /api/v1/me/password)", code="password_change_required"
        )
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
        signed_in = await auth.authenticate(
            session,
            token=bearer_token(request),
            policy=context.settings.auth,
            token_key=context.token_key,
            clock=context.clock,
        )
    user_id_var.set(signed_in.user.id)
    return await get_current_user(signed_in)


UserOwnTransactions = Annotated[User, Depends(get_user_outside_request_transaction)]
