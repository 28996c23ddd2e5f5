"""User accounts: create, find, list, change, reset; the first admin on an empty database.

Just past 300 lines, kept whole: every change to an account goes through the same checks
(the last active admin, unique names, the password policy), which read best side by side.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import AuthToken, Role, User
from cmschat.accounts.passwords import check_password_policy, hash_password
from cmschat.accounts.sessions import DISABLED, PASSWORD_RESET, ROLE_CHANGED
from cmschat.audit import service as audit
from cmschat.clock import Clock
from cmschat.errors import Conflict, Invalid, NotFound
from cmschat.events import (
    Published,
    account_changed,
    queue_events,
    session_ended,
    user_changed,
)
from cmschat.pagination import decode_cursor, encode_cursor

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
FIRST_ADMIN = "admin"
MAX_PAGE = 200
CURSOR_TAG = "u"


def normalise_username(raw: str) -> str:
    """Usernames compare case-insensitively; they are stored lower-case."""
    return raw.strip().lower()


def check_username(username: str) -> None:
    """Raise Invalid unless the (normalised) username is well-formed."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise Invalid(
            "username must be 3-32 characters: letters a-z, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="username",
        )


def generate_password() -> str:
    """A random one-time password (20 characters, ~120 bits)."""
    return secrets.token_urlsafe(15)


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    role: Role,
    display_name: str | None,
    must_change_password: bool,
    bcrypt_rounds: int,
    clock: Clock,
) -> User:
    """Create an account after checking the name and the password policy."""
    username = normalise_username(username)
    check_username(username)
    check_password_policy(password, username=username)
    # Hash before the first query, so no transaction is open during the quarter second.
    password_hash = await hash_password(password, rounds=bcrypt_rounds)
    if await session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"username {username!r} is taken", code="username_taken")
    user = User(
        username=username,
        display_name=display_name or username,
        role=role,
        is_active=True,
        must_change_password=must_change_password,
        password_hash=password_hash,
        password_changed_at=clock.now(),
    )
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"username {username!r} is taken", code="username_taken") from None
    audit.record(
        session,
        action="user.created",
        target_type="user",
        target_id=user.id,
        changes={
            "username": username,
            "role": role,
            "display_name": user.display_name,
            "must_change_password": must_change_password,
        },
    )
    return user


async def get_user(session: AsyncSession, *, user_id: int) -> User:
    """The user with this id, or NotFound."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


async def get_user_by_name(session: AsyncSession, *, username: str) -> User:
    """The user with this username (any case), or NotFound."""
    name = normalise_username(username)
    user = await session.scalar(select(User).where(User.username == name))
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


async def list_users(
    session: AsyncSession,
    *,
    query: str | None = None,
    role: Role | None = None,
    is_active: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[User], str | None]:
    """Users in id order, filtered, one page at a time."""
    limit = max(1, min(limit, MAX_PAGE))
    statement = select(User).order_by(User.id).limit(limit + 1)
    if query:
        pattern = (
            "%"
            + query.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "%"
        )
        statement = statement.where(
            or_(
                User.username.like(pattern, escape="\\"),
                func.lower(User.display_name).like(pattern, escape="\\"),
            )
        )
    if role is not None:
        statement = statement.where(User.role == role)
    if is_active is not None:
        statement = statement.where(User.is_active == is_active)
    if cursor:
        statement = statement.where(User.id > decode_cursor(CURSOR_TAG, cursor))
    users = list((await session.scalars(statement)).all())
    next_cursor = encode_cursor(CURSOR_TAG, users[limit - 1].id) if len(users) > limit else None
    return users[:limit], next_cursor


async def revoke_tokens(
    session: AsyncSession, *, user_id: int, clock: Clock, except_token_id: int | None = None
) -> int:
    """End every session of a user (but ``except_token_id``, the caller's own); how many."""
    statement = (
        update(AuthToken)
        .where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    if except_token_id is not None:
        statement = statement.where(AuthToken.id != except_token_id)
    result = await session.execute(statement)
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _count_other_active_admins(session: AsyncSession, *, user_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.admin, User.is_active.is_(True), User.id != user_id)
    )
    return int(count or 0)


async def update_user(
    session: AsyncSession,
    *,
    acting_user: User | None,
    user_id: int,
    changes: dict[str, Any],
    clock: Clock,
) -> User:
    """Apply an admin's (or operator's: no acting user) changes; disabling ends every session.

    The events close the user's open sockets: for good when disabled, to reconnect (and
    pick up the new role) when the role changed.
    """
    user = await get_user(session, user_id=user_id)
    losing_admin = (
        user.role is Role.admin
        and user.is_active
        and (changes.get("role") not in (None, Role.admin) or changes.get("is_active") is False)
    )
    if losing_admin:
        if acting_user is not None and user.id == acting_user.id:
            raise Conflict("you cannot demote or disable your own account", code="self_lockout")
        if await _count_other_active_admins(session, user_id=user.id) == 0:
            raise Conflict("this is the last active admin", code="last_admin")
    before = {"display_name": user.display_name, "role": user.role, "is_active": user.is_active}
    if "display_name" in changes and changes["display_name"] is not None:
        user.display_name = changes["display_name"]
    if changes.get("role") is not None:
        user.role = changes["role"]
    events: list[Published] = []
    if changes.get("is_active") is not None:
        user.is_active = changes["is_active"]
        if not user.is_active:
            await revoke_tokens(session, user_id=user.id, clock=clock)
            events.append(session_ended(user.id, reason=DISABLED))
    if not events and user.role != before["role"]:
        events.append(account_changed(user.id, reason=ROLE_CHANGED))
    after = {"display_name": user.display_name, "role": user.role, "is_active": user.is_active}
    _audit_user_changes(session, user_id=user.id, before=before, after=after)
    if after != before:
        events.append(user_changed(user.id))
    await session.flush()
    queue_events(session, events)
    return user


def _audit_user_changes(
    session: AsyncSession, *, user_id: int, before: dict[str, Any], after: dict[str, Any]
) -> None:
    """One event per kind of change, so "who made whom an admin" is one filter away."""
    diff = audit.changed(before, after)
    actions = {
        "role": "user.role_changed",
        "is_active": "user.enabled" if after["is_active"] else "user.disabled",
        "display_name": "user.updated",
    }
    for field, action in actions.items():
        if field in diff:
            audit.record(
                session,
                action=action,
                target_type="user",
                target_id=user_id,
                changes={field: diff[field]},
            )
    if not diff:
        audit.record(session, action="user.updated", target_type="user", target_id=user_id)


async def reset_password(
    session: AsyncSession,
    *,
    acting_user: User | None,
    user_id: int,
    password: str | None,
    bcrypt_rounds: int,
    clock: Clock,
) -> tuple[User, str | None]:
    """Set a one-time password (given or generated); the user must change it at next login.

    Every session of the user ends; the event closes their open sockets. ``acting_user`` is
    the admin, or None for an operator (CLI).
    """
    if acting_user is not None and user_id == acting_user.id:
        raise Conflict(
            "change your own password with POST /api/v1/me/password", code="self_lockout"
        )
    generated = password is None
    new_password = generate_password() if password is None else password
    check_password_policy(new_password, username="")
    # Hash before the first query, so no transaction is open during the quarter second.
    new_hash = await hash_password(new_password, rounds=bcrypt_rounds)
    user = await get_user(session, user_id=user_id)
    check_password_policy(new_password, username=user.username)
    user.password_hash = new_hash
    user.password_changed_at = clock.now()
    user.must_change_password = True
    ended = await revoke_tokens(session, user_id=user.id, clock=clock)
    audit.record(
        session,
        action="user.password_reset",
        target_type="user",
        target_id=user.id,
        changes={"generated": generated, "sessions_ended": ended},
    )
    await session.flush()
    queue_events(session, [session_ended(user.id, reason=PASSWORD_RESET)])
    return user, (new_password if generated else None)


async def ensure_first_admin(
    session: AsyncSession, *, bcrypt_rounds: int, clock: Clock
) -> str | None:
    """On an empty database create ``admin`` and return its one-time password; else None."""
    if await session.scalar(select(User.id).limit(1)) is not None:
        return None
    password = generate_password()
    try:
        await create_user(
            session,
            username=FIRST_ADMIN,
            password=password,
            role=Role.admin,
            display_name="Administrator",
            must_change_password=True,
            bcrypt_rounds=bcrypt_rounds,
            clock=clock,
        )
    except Conflict:
        return None  # another instance created it first
    return password
