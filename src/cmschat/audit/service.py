"""Recording audit events in the same transaction as the change they describe.

Services call ``record(session, …)`` next to the change; nothing is written yet. When the
unit of work commits, a ``before_commit`` hook appends the pending events to the chain
inside that same transaction: it locks the chain head (``SELECT … FOR UPDATE`` on MariaDB;
SQLite's write lock already serialises), numbers and hashes the events, and moves the head.
A rolled-back change therefore leaves no event, and a committed one always has its event.
The head stays locked only from the append to the commit, the end of the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util import await_only

from cmschat.audit import append, head
from cmschat.audit.fields import Origin, _changes_json, changed, origin_of, text_digest
from cmschat.db.actors import ACTOR_NAME_KEY, current_actor, session_clock
from cmschat.observability.logging import (
    client_address_var,
    client_request_id_var,
    request_id_var,
)

if TYPE_CHECKING:
    from cmschat.db.driver_sql import Driver
    from cmschat.db.session import Database

PENDING_KEY = "cmschat.audit.pending"
APPENDED_KEY = "cmschat.audit.appended"
INSTALLED_FLAG = "_cmschat_audit_trail"
"""Set on a Database's session class once its commits keep the audit trail."""

log = logging.getLogger(__name__)

__all__ = [
    "Origin",
    "audited",
    "chain_steps",
    "chained",
    "changed",
    "origin_of",
    "record",
    "record_read",
    "text_digest",
]


@dataclass
class _Pending:
    action: str
    target_type: str
    target_id: str | None
    changes: str
    """Canonical JSON (``chain.canonical_json``), built once when the event is recorded."""
    request_id: str | None
    client_address: str | None
    target: Any = field(default=None)
    """An ORM object whose id is only known after the flush."""
    savepoint: SessionTransaction | None = None
    """The savepoint it was recorded in: rolling that back drops the event too."""
    actor: tuple[str, str | None] | None = None
    """Who acted (actor, name), when not the session's: a batch written for many users."""


def record(
    session: AsyncSession | Session,
    *,
    action: str,
    target_type: str,
    target_id: object = None,
    target: Any = None,
    changes: Mapping[str, Any] | None = None,
    origin: Origin | None = None,
) -> None:
    """Queue an audit event; it is written when this unit of work commits.

    ``target`` is an ORM object not flushed yet, whose ``id`` becomes the target id.
    ``origin``: the actor and request the event belongs to, when the unit of work writes
    for someone else; by default, the session's actor and this task's request.
    """
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    if not getattr(type(sync_session), INSTALLED_FLAG, False):
        # Queued here, the event would vanish at the commit: fail loudly instead.
        raise RuntimeError("this database has no audit trail: call audit.service.audited(db)")
    pending: list[_Pending] = session.info.setdefault(PENDING_KEY, [])
    details = dict(changes or {})
    if origin is None:
        origin = Origin("", None, request_id_var.get(), client_address_var.get(), None)
        client_request_id = client_request_id_var.get()
    else:
        client_request_id = origin.client_request_id
    if client_request_id is not None:  # the caller's own id, beside (not instead of) ours
        details.setdefault("client_request_id", client_request_id)
    pending.append(
        _Pending(
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            changes=_changes_json(details),
            request_id=_clip(origin.request_id, 64),
            client_address=_clip(origin.client_address, 45),
            target=target,
            savepoint=sync_session.get_nested_transaction(),
            actor=(origin.actor, origin.actor_name) if origin.actor else None,
        )
    )


def record_read(
    session: AsyncSession,
    *,
    action: str,
    target_type: str,
    target_id: object = None,
    filters: Mapping[str, Any],
) -> None:
    """Queue the event of a read of private data: what was read, with the filters given.

    Free text a reader searched for goes in as ``text_digest``, like message bodies.
    """
    used = {key: value for key, value in filters.items() if value is not None}
    record(session, action=action, target_type=target_type, target_id=target_id, changes=used)


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


def _actor_identity(session: Session, actor: str, name: object = None) -> tuple[int | None, str]:
    kind, _, ident = actor.partition(":")
    if kind != "user":
        return None, ident or actor
    user_id = int(ident)
    if name is None:
        name = session.info.get(ACTOR_NAME_KEY)
    if not isinstance(name, str):
        # Whoever names a user actor knows the user (``set_actor``, ``unit_of_work``):
        # audit does not reach into accounts for it. A slip is logged, never fatal to
        # the commit of the change the event describes.
        log.warning("audit: user actor %s has no name; recorded by id", user_id)
        return user_id, f"#{user_id}"
    return user_id, name


def event_fields(
    session: AsyncSession,
    *,
    action: str,
    target_type: str,
    changes: Mapping[str, Any],
    origin: Origin,
    now: datetime,
    changes_json: str | None = None,
) -> dict[str, Any]:
    """An event as ``record`` and the commit would write it (``append.FIELDS``, its target
    id None), for a writer that chains its events in a trip of its own (``chain_steps``).
    ``changes_json``: the canonical JSON of ``changes`` when the caller wrote it, used
    unless the origin adds its client request id to them."""
    if changes_json is None or origin.client_request_id is not None:
        details = dict(changes)
        if origin.client_request_id is not None:
            details.setdefault("client_request_id", origin.client_request_id)
        changes_json = _changes_json(details)
    actor_id, actor_name = _actor_identity(session.sync_session, origin.actor, origin.actor_name)
    return {
        "occurred_at": now,
        "actor": origin.actor,
        "actor_id": actor_id,
        "actor_name": actor_name,
        "action": action,
        "target_type": target_type,
        "target_id": None,
        "request_id": _clip(origin.request_id, 64),
        "client_address": _clip(origin.client_address, 45),
        "changes": changes_json,
    }


def chain_steps(
    session: AsyncSession, driver: Driver, events: Callable[[], Sequence[Mapping[str, Any]]]
) -> append.Chained:
    """Steps that chain ``events`` (``event_fields``) in the caller's trip to the driver,
    in the session's transaction: written with it or rolled back with it. Once they ran,
    ``chained`` hands the new head to the session's commit, which exports it."""
    if not getattr(type(session.sync_session), INSTALLED_FLAG, False):
        raise RuntimeError("this database has no audit trail: call audit.service.audited(db)")
    return append.Chained(driver, events)


def chained(session: AsyncSession, steps: append.Chained) -> None:
    """The events of ``steps`` are in the transaction: export the head once it commits."""
    if steps.head is not None:
        session.info[APPENDED_KEY] = steps.head


def _append(session: Session) -> None:
    """Chain the session's pending events (runs inside the committing transaction)."""
    if session.in_nested_transaction():
        # SQLAlchemy fires before_commit when a savepoint is released too: the events wait
        # for the real commit, or the head would be locked, and exported, too early.
        return
    pending: list[_Pending] = session.info.pop(PENDING_KEY, [])
    if not pending:
        return
    session.flush()  # ids of new targets
    session_actor = current_actor(session)
    session_identity = _actor_identity(session, session_actor)
    now = session_clock(session).now()
    values = []
    for item in pending:
        target_id = item.target_id
        if target_id is None and item.target is not None:
            target_id = str(item.target.id)
        actor, (actor_id, actor_name) = session_actor, session_identity
        if item.actor is not None:
            actor = item.actor[0]
            actor_id, actor_name = _actor_identity(session, actor, item.actor[1])
        values.append(
            {
                "occurred_at": now,
                "actor": actor,
                "actor_id": actor_id,
                "actor_name": actor_name,
                "action": item.action,
                "target_type": item.target_type,
                "target_id": target_id,
                "request_id": item.request_id,
                "client_address": item.client_address,
                "changes": item.changes,
            }
        )
    # Straight to the driver, the three statements in one trip (audit/append.py): this
    # runs in every audited commit. ``before_commit`` runs inside SQLAlchemy's async
    # bridge, so the driver's coroutine is awaited from here with ``await_only``.
    driver = append.driver_of(session.connection())
    last_id, last_hash = await_only(append.append(driver, values))
    session.info[APPENDED_KEY] = (last_id, last_hash)


def _published(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released, not the transaction committed
    appended = session.info.pop(APPENDED_KEY, None)
    if appended is not None:
        head.advanced(*appended)


def _forget(session: Session, previous: SessionTransaction) -> None:
    """A rolled-back savepoint drops what was recorded in it; a full rollback, everything."""
    if previous.nested:
        pending: list[_Pending] = session.info.get(PENDING_KEY, [])
        session.info[PENDING_KEY] = [p for p in pending if p.savepoint is not previous]
        return
    session.info.pop(PENDING_KEY, None)
    session.info.pop(APPENDED_KEY, None)


def audited(db: Database) -> Database:
    """Keep the audit trail of this database's transactions (idempotent); returns ``db``.

    Called where a Database is opened for work (the app's start-up, the CLI, the backup
    jobs): the data layer itself knows nothing of audit.
    """
    target = db.session_class
    # A flag on the class, not ``event.contains``: SQLAlchemy's registry is keyed by id(),
    # which a new class can reuse once a dropped Database's class is collected.
    if not getattr(target, INSTALLED_FLAG, False):
        event.listen(target, "before_commit", _append)
        event.listen(target, "after_commit", _published)
        event.listen(target, "after_soft_rollback", _forget)
        setattr(target, INSTALLED_FLAG, True)
    return db
