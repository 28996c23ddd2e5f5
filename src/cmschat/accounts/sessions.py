"""Open sessions seen from the real-time side: batched validity checks and activity refresh.

A WebSocket authenticates once; these let the gateway keep asking "is this token still
good?" for all its connections in one query, and record that a user is active on a socket
so the idle timeout never ends a session in use.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import AuthToken, Role, User
from cmschat.settings import AuthSettings

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""Refresh last_used_at at most this often: the idle limit needs minutes, not milliseconds."""
REFRESH_FRACTION = 10
"""...and at least this many times per idle window, so a token in use never reaches it."""
CHECK_BATCH = 500

# Why a session ended (the close reason sockets get, see docs/realtime.md).
SIGNED_OUT = "signed_out"
PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a reason, not a password
PASSWORD_RESET = "password_reset"  # noqa: S105 - a reason, not a password
DISABLED = "disabled"
EXPIRED = "expired"
ENDED = "ended"
ROLE_CHANGED = "role_changed"


def idle_window(policy: AuthSettings) -> timedelta:
    """How long a session may go unused before it ends."""
    return windows(policy.token_idle_minutes)[0]


def refresh_interval(policy: AuthSettings) -> timedelta:
    """How stale ``last_used_at`` may get before a use writes it again."""
    return windows(policy.token_idle_minutes)[1]


@cache
def windows(idle_minutes: int) -> tuple[timedelta, timedelta]:
    """The idle window and the refresh interval of ``token_idle_minutes``, each made once
    (every signed-in request checks both)."""
    idle = timedelta(minutes=idle_minutes)
    return idle, min(LAST_USED_RESOLUTION, idle / REFRESH_FRACTION)


@dataclass(frozen=True)
class TokenState:
    """What the database says about one token now."""

    ended: str | None
    """Why the session is over (``ended``, ``disabled``, ``expired``); None while valid."""
    role: Role | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


async def check_sessions(
    session: AsyncSession,
    *,
    token_ids: Collection[int],
    policy: AuthSettings,
    now: datetime,
) -> dict[int, TokenState]:
    """The state of every token in ``token_ids``, in a query per few hundred tokens."""
    ids = sorted(set(token_ids))
    idle = idle_window(policy)
    states = {token_id: TokenState(ended=ENDED) for token_id in ids}  # gone: ended
    for start in range(0, len(ids), CHECK_BATCH):
        rows = await session.execute(
            select(
                AuthToken.id,
                AuthToken.revoked_at,
                AuthToken.expires_at,
                AuthToken.last_used_at,
                User.is_active,
                User.role,
            )
            .join(User, User.id == AuthToken.user_id)
            .where(AuthToken.id.in_(ids[start : start + CHECK_BATCH]))
        )
        for token_id, revoked_at, expires_at, last_used_at, is_active, role in rows:
            ended: str | None = None
            if not is_active:
                ended = DISABLED
            elif revoked_at is not None:
                ended = ENDED
            elif now >= expires_at or now >= last_used_at + idle:
                ended = EXPIRED
            states[token_id] = TokenState(
                ended=ended, role=role, expires_at=expires_at, last_used_at=last_used_at
            )
    return states


async def touch_sessions(
    session: AsyncSession, *, token_ids: Collection[int], now: datetime, policy: AuthSettings
) -> int:
    """Record activity on these sessions (those still open): idle time counts from ``now``.

    Returns how many were still open.
    """
    if not token_ids:
        return 0
    result = await session.execute(
        update(AuthToken)
        .where(
            AuthToken.id.in_(sorted(set(token_ids))),
            AuthToken.revoked_at.is_(None),
            # An ended session is not revived by a late touch.
            AuthToken.last_used_at > now - idle_window(policy),
            AuthToken.expires_at > now,
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
