"""Sessions: token checks with idle and absolute expiry, logout, password change.

Signing in (throttling, device tokens) is in ``signin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import AuthToken, User
from cmschat.accounts.passwords import (
    check_password_policy,
    hash_password,
    verify_password,
)
from cmschat.accounts.ratelimit import FailureCounter, Limit
from cmschat.accounts.service import revoke_tokens
from cmschat.accounts.sessions import PASSWORD_CHANGED, SIGNED_OUT, refresh_interval, windows
from cmschat.accounts.tokens import MAX_TOKEN_LENGTH, new_token, token_digest
from cmschat.audit import service as audit
from cmschat.clock import Clock
from cmschat.db.actors import user_actor
from cmschat.db.driver_sql import Driver, Statement
from cmschat.errors import Invalid, RateLimited, Unauthorized
from cmschat.events import queue_events, session_ended
from cmschat.settings import AuthSettings


@dataclass(frozen=True)
class Client:
    """Where a request comes from."""

    address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class SignedIn:
    """Who the caller is: a signed-in user and the token the request carried."""

    user: User
    token: AuthToken

    @property
    def actor(self) -> str:
        """The actor label their unit of work stamps rows and audit events with."""
        return user_actor(self.user.id)


class DummyHash:
    """A hash to verify against for unknown users, so their answer takes as long as a real one."""

    def __init__(self) -> None:
        self._by_rounds: dict[int, str] = {}

    async def get(self, rounds: int) -> str:
        """A valid hash of a random password at ``rounds``."""
        if rounds not in self._by_rounds:
            self._by_rounds[rounds] = await hash_password(new_token(), rounds=rounds)
        return self._by_rounds[rounds]

    async def prepare(self, rounds: int) -> None:
        """Make the hash now, at start-up, so that no request pays for it."""
        # Made on first use, the first unknown-username login would take twice as long as
        # any other: a one-shot answer to "does this account exist?".
        await self.get(rounds)


_SIGN_IN = (
    select(AuthToken, User)
    .join(User, User.id == AuthToken.user_id)
    .where(AuthToken.token_hash == bindparam("digest"))
)
"""Built once (every request signs in): no statement to build nor cache key to compute."""


def _ended(
    policy: AuthSettings,
    now: datetime,
    *,
    last_used_at: datetime,
    expires_at: datetime,
    revoked_at: datetime | None,
    is_active: bool,
) -> bool:
    """Whether a token no longer signs anyone in: revoked, its user disabled, expired."""
    if revoked_at is not None or not is_active or now >= expires_at:
        return True
    return now >= last_used_at + windows(policy.token_idle_minutes)[0]


async def authenticate(
    session: AsyncSession, *, token: str, policy: AuthSettings, token_key: bytes, clock: Clock
) -> SignedIn:
    """Who a bearer token signs in; Unauthorized if it is unknown, ended or expired.

    It only answers: the caller names them as the actor of its unit of work (``act_as``),
    before that unit of work flushes the refreshed ``last_used_at``.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    digest = token_digest(token, key=token_key)
    found = (await session.execute(_SIGN_IN, {"digest": digest})).first()
    now = clock.now()
    if found is None:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    row, user = found
    if _ended(
        policy,
        now,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        is_active=user.is_active,
    ):
        raise Unauthorized("invalid or expired token", code="invalid_token")
    # Not on every request (a write each), but often enough that a token in use never idles out.
    if now - row.last_used_at >= refresh_interval(policy):
        row.last_used_at = now
    return SignedIn(user=user, token=row)


@dataclass(frozen=True)
class Caller:
    """Who a token signs in, read as one row with the driver (``caller_of``)."""

    user_id: int
    username: str
    token_id: int
    must_change_password: bool
    refreshed: datetime | None
    """The token's new ``last_used_at`` when a refresh is due (``touch`` stores it)."""

    @property
    def actor(self) -> str:
        """The actor label their units of work stamp rows and audit events with."""
        return user_actor(self.user_id)


def _token_row() -> Select[Any]:
    t, u = AuthToken.__table__.c, User.__table__.c
    return (
        select(
            t.id,
            t.user_id,
            t.last_used_at,
            t.expires_at,
            t.revoked_at,
            u.username,
            u.is_active,
            u.must_change_password,
        )
        .join_from(AuthToken.__table__, User.__table__, u.id == t.user_id)
        .where(t.token_hash == bindparam("digest"))
    )


_TOKEN_ROW = Statement(lambda _dialect: _token_row(), ["digest"])
_REVOKED, _ACTIVE = 4, 6
"""Where ``_token_row``'s ``revoked_at`` and ``is_active`` are."""


def token_read(token: str, *, token_key: bytes) -> tuple[Statement, tuple[Any, ...]]:
    """The statement and parameters reading ``token``'s row for ``caller_of``; Unauthorized
    at once for a token no row can match (empty, or longer than any token)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    return _TOKEN_ROW, (token_digest(token, key=token_key),)


def may_sign_in(found: Sequence[tuple[Any, ...]]) -> bool:
    """False for a token row read by ``token_read`` that ``caller_of`` will surely refuse
    (none, revoked, disabled user): a statement sharing its trip can skip its work. True
    says nothing: only ``caller_of`` signs in (expiry needs the clock)."""
    return bool(found) and found[0][_REVOKED] is None and bool(found[0][_ACTIVE])


def caller_of(
    driver: Driver, found: Sequence[tuple[Any, ...]], *, policy: AuthSettings, clock: Clock
) -> Caller:
    """``authenticate``'s answer from the rows ``token_read`` read: the same checks on the
    token's and its user's row, no ORM objects loaded (the hot GET's)."""
    now = clock.now()
    if not found:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    token_id, user_id, used, expires, revoked, username, active, must_change = found[0]
    # ``_ended``'s test, written out: its keyword call and conversions were about half of
    # this function's time (timeit); a revoked token needs no time read.
    idle, refresh = windows(policy.token_idle_minutes)
    if revoked is not None or not active or now >= driver.utc(expires):
        raise Unauthorized("invalid or expired token", code="invalid_token")
    last_used_at = driver.utc(used)
    if now >= last_used_at + idle:
        raise Unauthorized("invalid or expired token", code="invalid_token")
    due = now - last_used_at >= refresh
    return Caller(
        user_id=user_id,
        username=username,
        token_id=token_id,
        must_change_password=bool(must_change),
        refreshed=now if due else None,
    )


async def touch(session: AsyncSession, *, token_id: int, last_used_at: datetime) -> None:
    """Store a token's refreshed ``last_used_at`` (one a read-only request found due: it is
    not in that request's session) as one UPDATE of this write session."""
    await session.execute(
        update(AuthToken).where(AuthToken.id == token_id).values(last_used_at=last_used_at)
    )


async def logout(session: AsyncSession, *, current: SignedIn, clock: Clock) -> None:
    """End the caller's session; the event closes its open sockets."""
    current.token.revoked_at = clock.now()
    audit.record(session, action="auth.logout", target_type="user", target_id=current.user.id)
    await session.flush()
    queue_events(
        session, [session_ended(current.user.id, reason=SIGNED_OUT, token_ids=(current.token.id,))]
    )


async def change_password(
    session: AsyncSession,
    *,
    current: SignedIn,
    current_password: str,
    new_password: str,
    bcrypt_rounds: int,
    counter: FailureCounter,
    policy: AuthSettings,
    clock: Clock,
) -> User:
    """Change one's own password; every other session of the user ends (and its sockets).

    The current-password check spends a budget of its own per user, counted before bcrypt
    like a login's: a stolen token must not be a way to guess the password.
    """
    user = current.user
    budget = Limit(f"password:{user.id}", policy.max_failures_per_account)
    taken = await counter.take([budget], window=policy.failure_window_seconds)
    if not taken.allowed:
        raise RateLimited(
            "too many wrong current passwords; try again later", retry_after=taken.retry_after
        )
    if not await verify_password(current_password, user.password_hash):
        raise Invalid("current password is wrong", field="current_password", code="wrong_password")
    await counter.reset(budget.key)
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
    queue_events(
        session,
        [session_ended(user.id, reason=PASSWORD_CHANGED, except_token_id=current.token.id)],
    )
    return user
