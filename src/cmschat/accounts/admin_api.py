"""The console's user management: ``/api/v1/admin/users`` (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cmschat.accounts import service
from cmschat.accounts.models import Role
from cmschat.accounts.schemas import (
    AdminUserRead,
    PasswordReset,
    PasswordResetResult,
    UserCreate,
    UserCreated,
    UserPage,
    UserUpdate,
)
from cmschat.api.deps import AdminUser, Context, ResourceId, SessionDep, audits_reads
from cmschat.api.errors import ADMIN_BODY_ERRORS, ADMIN_ERRORS, responses
from cmschat.audit import service as audit

router = APIRouter(prefix="/admin/users", tags=["admin"])
# A body that cannot be read as JSON text (not UTF-8) is refused before validation.


@router.get("", response_model=UserPage, responses=responses(*ADMIN_ERRORS))
async def list_users(
    admin: AdminUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="part of username or name")] = None,
    role: Role | None = None,
    is_active: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
) -> UserPage:
    """Users in creation order, filtered by text, role and state."""
    users, next_cursor = await service.list_users(
        session, query=q, role=role, is_active=is_active, cursor=cursor, limit=limit
    )
    return UserPage(items=[AdminUserRead.model_validate(u) for u in users], next_cursor=next_cursor)


@router.post(
    "", status_code=201, response_model=UserCreated, responses=responses(*ADMIN_BODY_ERRORS, 409)
)
async def create_user(
    body: UserCreate, admin: AdminUser, session: SessionDep, context: Context
) -> UserCreated:
    """Create an account; without a password, a one-time one is generated and returned once."""
    generated = service.generate_password() if body.password is None else None
    must_change = body.must_change_password
    user = await service.create_user(
        session,
        username=body.username,
        password=generated or body.password or "",
        role=body.role,
        display_name=body.display_name,
        # A generated password is one-time unless the admin says otherwise; a given one
        # keeps the API's original default (no forced change) so scripts behave as before.
        must_change_password=(generated is not None) if must_change is None else must_change,
        bcrypt_rounds=context.settings.auth.bcrypt_rounds,
        clock=context.clock,
    )
    return UserCreated.model_validate(user).model_copy(update={"temporary_password": generated})


@router.get("/{user_id}", response_model=AdminUserRead, responses=responses(*ADMIN_ERRORS, 404))
@audits_reads  # leaves an audit line: its unit of work writes
async def get_user(user_id: ResourceId, admin: AdminUser, session: SessionDep) -> AdminUserRead:
    """One account; the read is audited."""
    user = await service.get_user(session, user_id=user_id)
    audit.record_read(
        session, action="user.viewed", target_type="user", target_id=user_id, filters={}
    )
    return AdminUserRead.model_validate(user)


@router.patch(
    "/{user_id}", response_model=AdminUserRead, responses=responses(*ADMIN_BODY_ERRORS, 404, 409)
)
async def update_user(
    user_id: ResourceId, body: UserUpdate, admin: AdminUser, session: SessionDep, context: Context
) -> AdminUserRead:
    """Change display name, role or active state; disabling ends the user's sessions."""
    user = await service.update_user(
        session,
        acting_user=admin,
        user_id=user_id,
        changes=body.model_dump(exclude_unset=True),
        clock=context.clock,
    )
    return AdminUserRead.model_validate(user)


@router.post(
    "/{user_id}/password",
    response_model=PasswordResetResult,
    responses=responses(*ADMIN_BODY_ERRORS, 404, 409),
)
async def reset_password(
    user_id: ResourceId,
    body: PasswordReset,
    admin: AdminUser,
    session: SessionDep,
    context: Context,
) -> PasswordResetResult:
    """Set a one-time password; the user's sessions end and they must change it at login."""
    user, temporary = await service.reset_password(
        session,
        acting_user=admin,
        user_id=user_id,
        password=body.password,
        bcrypt_rounds=context.settings.auth.bcrypt_rounds,
        clock=context.clock,
    )
    return PasswordResetResult(
        user=AdminUserRead.model_validate(user), temporary_password=temporary
    )
