"""Routes for signing in and out and for one's own account."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from cmschat.accounts import auth
from cmschat.accounts.schemas import LoginRequest, LoginResponse, PasswordChange, UserRead
from cmschat.api.deps import Context, SessionDep, SignedIn, client_of
from cmschat.api.errors import responses

log = logging.getLogger(__name__)
router = APIRouter(tags=["accounts"])


@router.post("/auth/login", response_model=LoginResponse, responses=responses(400, 401, 422, 429))
async def login(body: LoginRequest, request: Request, context: Context) -> LoginResponse:
    """Open a session; ``401`` on wrong credentials, ``429`` with ``Retry-After`` when throttled."""
    client = client_of(request)
    try:
        token, row, user = await auth.login(
            context.db,
            username=body.username,
            password=body.password,
            client=client,
            policy=context.settings.auth,
            counter=context.failures,
            dummy_hash=context.dummy_hash,
            token_key=context.token_key,
            clock=context.clock,
        )
    except Exception as exc:
        log.warning(
            "login refused",
            extra={
                "event.action": "auth.login_failed",
                "event.reason": getattr(exc, "code", "error"),
                "user.name": body.username[:64],
            },
        )
        raise
    log.info(
        "login",
        extra={"event.action": "auth.login", "user.name": user.username, "user.id": str(user.id)},
    )
    return LoginResponse(
        access_token=token, expires_at=row.expires_at, user=UserRead.model_validate(user)
    )


@router.post("/auth/logout", status_code=204, response_class=Response, responses=responses(401))
async def logout(signed_in: SignedIn, session: SessionDep, context: Context) -> Response:
    """End this session (the token stops working at once)."""
    await auth.logout(session, current=signed_in, clock=context.clock)
    return Response(status_code=204)


@router.get("/me", response_model=UserRead, responses=responses(401))
async def me(signed_in: SignedIn) -> UserRead:
    """The signed-in user's profile."""
    return UserRead.model_validate(signed_in.user)


@router.post("/me/password", response_model=UserRead, responses=responses(400, 401, 422))
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
        clock=context.clock,
    )
    return UserRead.model_validate(user)
