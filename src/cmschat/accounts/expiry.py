"""Sign-in records past their use: expired sessions and old sign-in attempts.

Run by the retention purge, in bounded batches of one transaction each, so a large
backlog never holds a long write lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cmschat.accounts.models import AuthToken, LoginAttempt
from cmschat.db.batches import delete_in_batches
from cmschat.db.session import Database

SESSION_GRACE = timedelta(days=1)
"""How long an expired session's row is kept after its absolute expiry."""


async def remove_expired_sessions(*, db: Database, now: datetime, batch: int, actor: str) -> int:
    """Delete sign-in sessions past their absolute expiry (and a day's grace); how many."""
    return await delete_in_batches(
        db, AuthToken.id, AuthToken.expires_at < now - SESSION_GRACE, size=batch, actor=actor
    )


async def remove_login_attempts(*, db: Database, before: datetime, batch: int, actor: str) -> int:
    """Delete sign-in attempts made before ``before``; how many."""
    return await delete_in_batches(
        db, LoginAttempt.id, LoginAttempt.created_at < before, size=batch, actor=actor
    )
