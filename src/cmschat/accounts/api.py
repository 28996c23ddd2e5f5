"""Routes for signing in and out and for one's own account."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from cmschat.accounts import auth, passwords, service, signin
from cmschat.accounts.schemas import (
    Directory,
    DirectoryEntry,
    LoginRequest,
    LoginResponse,
    PasswordChange,
    PasswordPolicy,
    UserRead,
)
from cmschat.api.deps import Context, CurrentUser, SessionDep, SignedIn, client_of
from cmschat.api.errors import CREDENTIALS_ERRORS, SIGNED_IN_QUERY_ERRORS, TOKEN_ERRORS, responses
from cmschat.errors import CmschatError

log = logging.getLogger(__name__)
router = APIRouter(tags=["accounts"])


@router.get("/auth/password-policy", response_model=PasswordPolicy)
async def password_policy() -> PasswordPolicy:
    """The rules for a new password, so forms can show them before the first attempt."""
    return PasswordPolicy(
        min_length=passwords.MIN_LENGTH,
        max_length=passwords.MAX_LENGTH,
        min_distinct_characters=passwords.MIN_DISTINCT,
    )


@router.post("/auth/login", response_model=LoginResponse, responses=responses(*CREDENTIALS_ERRORS))
async def login(body: LoginRequest, request: Request, context: Context) -> LoginResponse:
    """Open a session; ``401`` on wrong credentials, ``429`` with ``Retry-After`` when throttled."""
    client = client_of(request)
    try:
        opened = await signin.login(
            context.db,
            username=body.username,
            password=body.password,
            device_token=body.device_token,
            client=client,
            policy=context.settings.auth,
            counter=context.failures,
            dummy_hash=context.dummy_hash,
            token_key=context.token_key,
            clock=context.clock,
        )
    except CmschatError as exc:  # an outage is logged once, by the request middleware
        log.warning(
            "login refused",
            extra={
                "event.action": "auth.login_failed",
                "event.reason": getattr(exc, "code", "error"),
                "user.name": signin.recorded_username(body.username),
            },
        )
        raise
    user = opened.user
    log.info(
        "login",
        extra={"event.action": "auth.login", "user.name": user.username, "user.id": str(user.id)},
    )
    return LoginResponse(
        access_token=opened.token,
        expires_at=opened.row.expires_at,
        user=UserRead.model_validate(user),
        device_token=opened.device_token,
    )


@router.post(
    "/auth/logout", status_code=204, response_class=Response, responses=responses(*TOKEN_ERRORS)
)
async def logout(signed_in: SignedIn, session: SessionDep, context: Context) -> Response:
    """End this session (the token stops working at once, its sockets close)."""
    await auth.logout(session, current=signed_in, clock=context.clock)
    return Response(status_code=204)


@router.get("/me", response_model=UserRead, responses=responses(*TOKEN_ERRORS))
async def me(signed_in: SignedIn) -> UserRead:
    """The signed-in user's profile."""
    return UserRead.model_validate(signed_in.user)


@router.post("/me/password", response_model=UserRead, responses=responses(*CREDENTIALS_ERRORS))
async def change_password(
    body: PasswordChange, signed_in: SignedIn, session: SessionDep, context: Context
) -> UserRead:
    """Change one's own password; the user's other sessions end."""
    user = await auth.change_password(
        session,
        current=signed_in,
        current_password=body.current_password,
        new_password=body.new_password,
        bcrypt_rounds=context.settings.auth.bcrypt_rounds,
        counter=context.failures,
        policy=context.settings.auth,
        clock=context.clock,
    )
    return UserRead.model_validate(user)


@router.get("/users", response_model=Directory, responses=responses(*SIGNED_IN_QUERY_ERRORS))
async def directory(
    user: CurrentUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="part of username or name")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> Directory:
    """Active users, to start a conversation or mention someone."""
    users, _ = await service.list_users(session, query=q, is_active=True, limit=limit)
    return Directory(items=[DirectoryEntry.model_validate(u) for u in users])
