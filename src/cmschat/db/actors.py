"""A unit of work's context: who acts in it (a user, or a named system actor) and its clock.

This is the one context object services do not receive as arguments: the audit-column hooks
and the audit trail read it from ``session.info`` to stamp every row and event the unit of
work writes. It is set where the unit of work is opened: ``Database.unit_of_work(actor)``
for the CLI, jobs and the services that run their own transactions, and for a request by
``api.deps`` once the caller's token checks out (authentication itself only answers who the
caller is). The clock is the ``Database``'s; services that need the time also take
``clock=`` explicitly. See docs/architecture.md, "Transactions and request context".
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cmschat.clock import Clock

ACTOR_KEY = "cmschat.actor"
ACTOR_NAME_KEY = "cmschat.actor_name"
CLOCK_KEY = "cmschat.clock"

# Named system actors: one per entry point that changes data without a signed-in user.
SYSTEM_CLI = "system:cli"
SYSTEM_SETUP = "system:setup"
ANONYMOUS = "system:anonymous"
SYSTEM_ERASER = "system:attachments"
SYSTEM_AUDIT = "system:audit"
SYSTEM_RETENTION = "system:retention"
SYSTEM_BACKUP = "system:backup"
SYSTEM_MONITORING = "system:monitoring"
SYSTEM_SENDER = "system:sender"
"""The group commit of sends: its rows and events name each sender as their actor."""


def user_actor(user_id: int) -> str:
    """The actor label of a signed-in user."""
    return f"user:{user_id}"


def set_actor(session: AsyncSession | Session, actor: str, *, name: str | None = None) -> None:
    """Name who acts for the rest of this session's unit of work (before it flushes).

    ``name`` is the user's username, snapshotted into audit events: give it for a user.
    """
    session.info[ACTOR_KEY] = actor
    if name is not None:
        session.info[ACTOR_NAME_KEY] = name
    else:
        session.info.pop(ACTOR_NAME_KEY, None)


def current_actor(session: AsyncSession | Session) -> str:
    """The actor declared for this session; a missing actor is a programming error."""
    actor = session.info.get(ACTOR_KEY)
    if not isinstance(actor, str):
        raise RuntimeError("no actor set on the session: call set_actor() first")
    return actor


def session_clock(session: AsyncSession | Session) -> Clock:
    """The clock this session stamps times with."""
    clock = session.info.get(CLOCK_KEY)
    if clock is None:
        raise RuntimeError("no clock set on the session")
    return clock  # type: ignore[no-any-return]
