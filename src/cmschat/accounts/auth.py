"""Sessions: login with throttling, token checks with idle and absolute expiry, logout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import AuthToken, LoginAttempt, User
from cmschat.accounts.passwords import (
    check_password_policy,
    hash_password,
    verify_password,
)
from cmschat.accounts.ratelimit import FailureCounter
from cmschat.accounts.service import normalise_username, revoke_tokens
from cmschat.accounts.sessions import PASSWORD_CHANGED, SIGNED_OUT, refresh_interval
from cmschat.accounts.tokens import MAX_TOKEN_LENGTH, new_token, token_digest
from cmschat.audit import service as audit
from cmschat.clock import Clock
from cmschat.db.actors import ANONYMOUS, set_actor, user_actor
from cmschat.db.session import Database
from cmschat.errors import Invalid, RateLimited, Unauthorized
from cmschat.events import Published, session_ended
from cmschat.settings import AuthSettings

WRONG_CREDENTIALS = "wrong username or password"


@dataclass(frozen=True)
class Client:
    """Where a request comes from."""

    address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Session:
    """A signed-in user and the token the request carried."""

    user: User
    token: AuthToken


class DummyHash:
    """A hash to verify against for unknown users, so their answer takes as long as a real one."""

    def __init__(self) -> None:
        self._by_rounds: dict[int, str] = {}

    async def get(self, rounds: int) -> str:
        """A valid hash of a random password at ``rounds``."""
        if rounds not in self._by_rounds:
            self._by_rounds[rounds] = await hash_password(new_token(), rounds=rounds)
        return self._by_rounds[rounds]


async def login(
    db: Database,
    *,
    username: str,
    password: str,
    client: Client,
    policy: AuthSettings,
    counter: FailureCounter,
    dummy_hash: DummyHash,
    token_key: bytes,
    clock: Clock,
) -> tuple[str, AuthToken, User]:
    """Check credentials and open a session; every attempt is recorded, failures are counted.

    Owns its transactions (it takes the Database): the password check costs a quarter
    second of CPU and must not hold a transaction open meanwhile (on SQLite that would
    hold the one connection and stall every other request); and a refused attempt is
    recorded in a transaction of its own, since the refusal itself is an error.
    """
    name = normalise_username(username)
    account_key, address_key = f"account:{name}", f"address:{client.address}"
    wait = max(
        await counter.retry_after(account_key, limit=policy.max_failures_per_account),
        await counter.retry_after(address_key, limit=policy.max_failures_per_address),
    )
    async with db.unit_of_work(ANONYMOUS) as session:
        user = await session.scalar(select(User).where(User.username == name))
    if wait:
        await _record(db, name, user, client, succeeded=False, reason="rate_limited")
        raise RateLimited("too many failed logins; try again later", retry_after=wait)

    stored = user.password_hash if user else await dummy_hash.get(policy.bcrypt_rounds)
    matches = await verify_password(password, stored)
    if user is None or not matches or not user.is_active:
        reason = "disabled" if user is not None and matches else "bad_credentials"
        await counter.add_failure(account_key, window=policy.failure_window_seconds)
        await counter.add_failure(address_key, window=policy.failure_window_seconds)
        await _record(db, name, user, client, succeeded=False, reason=reason)
        raise Unauthorized(WRONG_CREDENTIALS, code="bad_credentials")

    await counter.reset(account_key)
    now = clock.now()
    token = new_token()
    row = AuthToken(
        user_id=user.id,
        token_hash=token_digest(token, key=token_key),
        expires_at=now + timedelta(hours=policy.token_absolute_hours),
        last_used_at=now,
        client_address=client.address,
        user_agent=(client.user_agent or "")[:255] or None,
    )
    async with db.unit_of_work(user_actor(user.id), actor_name=user.username) as session:
        session.add(row)
        session.add(_attempt(name, user, client, succeeded=True, reason="ok"))
        audit.record(session, action="auth.login", target_type="user", target_id=user.id)
    return token, row, user


async def _record(
    db: Database, name: str, user: User | None, client: Client, *, succeeded: bool, reason: str
) -> None:
    # Whoever failed to sign in is not (yet) the account's owner: the attempt is anonymous.
    async with db.unit_of_work(ANONYMOUS) as session:
        session.add(_attempt(name, user, client, succeeded=succeeded, reason=reason))
        audit.record(
            session,
            action="auth.login_failed",
            target_type="user",
            target_id=user.id if user is not None else None,
            changes={"username": name[:64], "reason": reason},
        )


def _attempt(
    name: str, user: User | None, client: Client, *, succeeded: bool, reason: str
) -> LoginAttempt:
    return LoginAttempt(
        username=name[:64],
        user_id=user.id if user else None,
        succeeded=succeeded,
        reason=reason,
        client_address=client.address,
        user_agent=(client.user_agent or "")[:255] or None,
    )


async def authenticate(
    session: AsyncSession, *, token: str, policy: AuthSettings, token_key: bytes, clock: Clock
) -> Session:
    """The session a bearer token belongs to; Unauthorized if it is unknown, ended or expired."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    found = (
        await session.execute(
            select(AuthToken, User)
            .join(User, User.id == AuthToken.user_id)
            .where(AuthToken.token_hash == token_digest(token, key=token_key))
        )
    ).first()
    now = clock.now()
    if found is None:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    row, user = found
    idle_limit = row.last_used_at + timedelta(minutes=policy.token_idle_minutes)
    if (
        row.revoked_at is not None
        or not user.is_active
        or now >= row.expires_at
        or now >= idle_limit
    ):
        raise Unauthorized("invalid or expired token", code="invalid_token")
    set_actor(session, user_actor(user.id), name=user.username)
    # Not on every request (a write each), but often enough that a token in use never idles out.
    if now - row.last_used_at >= refresh_interval(policy):
        row.last_used_at = now
    return Session(user=user, token=row)


async def logout(session: AsyncSession, *, current: Session, clock: Clock) -> list[Published]:
    """End the caller's session; the event closes its open sockets."""
    current.token.revoked_at = clock.now()
    audit.record(session, action="auth.logout", target_type="user", target_id=current.user.id)
    await session.flush()
    return [session_ended(current.user.id, reason=SIGNED_OUT, token_ids=(current.token.id,))]


async def change_password(
    session: AsyncSession,
    *,
    current: Session,
    current_password: str,
    new_password: str,
    bcrypt_rounds: int,
    clock: Clock,
) -> tuple[User, list[Published]]:
    """Change one's own password; every other session of the user ends (and its sockets)."""
    user = current.user
    if not await verify_password(current_password, user.password_hash):
        raise Invalid("current password is wrong", field="current_password", code="wrong_password")
    if new_password == current_password:
        raise Invalid(
            "new password must differ from the current one",
            field="new_password",
            code="weak_password",
        )
    check_password_policy(new_password, username=user.username, field="new_password")
    user.password_hash = await hash_password(new_password, rounds=bcrypt_rounds)
    user.password_changed_at = clock.now()
    user.must_change_password = False
    ended = await revoke_tokens(
        session, user_id=user.id, clock=clock, except_token_id=current.token.id
    )
    audit.record(
        session,
        action="user.password_changed",
        target_type="user",
        target_id=user.id,
        changes={"sessions_ended": ended},
    )
    await session.flush()
    return user, [session_ended(user.id, reason=PASSWORD_CHANGED, except_token_id=current.token.id)]
