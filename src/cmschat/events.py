"""What a committed change tells connected clients, and how it leaves: after the commit.

Neutral ground: chat, notices and accounts all produce ``Published`` events, and the
realtime layer routes them, so none of those packages has to import another to do so.

Services queue their events on the unit of work with ``queue_events`` (Zulip's
``send_event_on_commit``), next to the change, as ``audit.record`` queues audit events.
Nothing leaves yet. When the transaction commits, the queued events become ready and the
unit of work hands them to the publisher it was given at start-up (db/session.py); a
rollback drops them, and a rolled-back savepoint drops those queued inside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

EVERYONE = 0
"""The ``room_id`` of an event for every connected user (a notice); no room has it."""

SESSION_ENDED = "session.ended"
"""Some sessions (tokens) of a user ended: their sockets close and must not come back."""
ACCOUNT_CHANGED = "account.changed"
"""A user's account changed (role): their sockets close and reconnect to pick it up."""
SESSION_EVENTS = frozenset({SESSION_ENDED, ACCOUNT_CHANGED})
MEMBER_CHANGED = "member.changed"
"""A member's role changed: tells the instances' caches (chat/caches.py), no socket."""
USER_CHANGED = "user.changed"
"""A user's name, role or state changed: tells the instances' caches, no socket."""


@dataclass(frozen=True)
class Published:
    """An event as the realtime layer routes it: to a room, or only to some users."""

    room_id: int
    seq: int | None
    type: str
    payload: Mapping[str, Any]
    user_id: int | None = None
    """For member events: who joined or left (their connections re-subscribe)."""
    only_user_ids: tuple[int, ...] | None = None
    """Deliver only to these users' connections (read markers), not the whole room."""


def session_ended(
    user_id: int,
    *,
    reason: str,
    token_ids: tuple[int, ...] | None = None,
    except_token_id: int | None = None,
) -> Published:
    """Sessions of ``user_id`` ended: ``token_ids`` (None: all), except ``except_token_id``."""
    return Published(
        room_id=EVERYONE,
        seq=None,
        type=SESSION_ENDED,
        payload={
            "reason": reason,
            "token_ids": list(token_ids) if token_ids is not None else None,
            "except_token_id": except_token_id,
        },
        only_user_ids=(user_id,),
    )


def account_changed(user_id: int, *, reason: str) -> Published:
    """The account of ``user_id`` changed in a way open sockets must reconnect to see."""
    return Published(
        room_id=EVERYONE,
        seq=None,
        type=ACCOUNT_CHANGED,
        payload={"reason": reason},
        only_user_ids=(user_id,),
    )


def member_changed(room_id: int, user_id: int) -> Published:
    """Drops the cached membership of ``user_id`` in ``room_id`` on every instance."""
    return Published(
        room_id=room_id,
        seq=None,
        type=MEMBER_CHANGED,
        payload={},
        user_id=user_id,
        only_user_ids=(),  # routed to no connection: for the caches only
    )


def user_changed(user_id: int) -> Published:
    """Drops what every instance caches of ``user_id`` (their new name shows at once)."""
    return Published(
        room_id=EVERYONE,
        seq=None,
        type=USER_CHANGED,
        payload={},
        user_id=user_id,
        only_user_ids=(),  # routed to no connection: for the caches only
    )


Publisher = Callable[[Sequence[Published]], Awaitable[None]]
"""Hands committed events to the clients' side (the app's broker); must not raise."""

_PENDING_KEY = "cmschat.events.pending"
_READY_KEY = "cmschat.events.ready"


def queue_events(session: AsyncSession | Session, events: Iterable[Published]) -> None:
    """Queue events on the unit of work: they are published once it has committed."""
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    savepoint = sync_session.get_nested_transaction()
    pending: list[tuple[Published, SessionTransaction | None]] = session.info.setdefault(
        _PENDING_KEY, []
    )
    pending.extend((item, savepoint) for item in events)


def take_ready(session: AsyncSession | Session) -> list[Published]:
    """The events of the committed transaction, in queue order, removed from the session."""
    ready: list[Published] = session.info.pop(_READY_KEY, [])
    return ready


def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: its events wait for the real commit
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:
        session.info.setdefault(_READY_KEY, []).extend(item for item, _ in pending)


def _inside(savepoint: SessionTransaction | None, rolled_back: SessionTransaction) -> bool:
    """Whether an event queued in ``savepoint`` was queued inside ``rolled_back``."""
    while savepoint is not None:
        if savepoint is rolled_back:
            return True
        savepoint = savepoint.parent
    return False


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    """A rolled-back savepoint drops what was queued in it (and in savepoints inside it);
    a full rollback drops everything."""
    if previous.nested:
        pending = session.info.get(_PENDING_KEY)
        if pending:
            session.info[_PENDING_KEY] = [p for p in pending if not _inside(p[1], previous)]
        return
    session.info.pop(_PENDING_KEY, None)


def install() -> None:
    """Register the commit and rollback hooks once for every Session (idempotent)."""
    if not event.contains(Session, "after_commit", _committed):
        event.listen(Session, "after_commit", _committed)
        event.listen(Session, "after_soft_rollback", _rolled_back)
