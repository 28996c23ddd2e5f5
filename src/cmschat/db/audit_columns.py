"""Stamp created_*/updated_* on every write, from the session's actor and clock.

Two hooks cover both ways rows change: ``before_flush`` for ORM objects and
``do_orm_execute`` for bulk ``update()`` statements, so no service sets them by hand.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from cmschat.db.actors import current_actor, session_clock
from cmschat.db.base import Base


def _stamp_objects(session: Session, _context: Any, _instances: Any) -> None:
    if not session.new and not session.dirty:
        return
    actor = current_actor(session)
    now = session_clock(session).now()
    for obj in session.new:
        if isinstance(obj, Base):
            obj.created_at = obj.updated_at = now
            obj.created_by = obj.updated_by = actor
    for obj in session.dirty:
        if isinstance(obj, Base) and session.is_modified(obj, include_collections=False):
            obj.updated_at = now
            obj.updated_by = actor


def _stamp_bulk_updates(state: ORMExecuteState) -> None:
    if not state.is_update:
        return
    mapper = state.bind_arguments.get("mapper")
    if mapper is None or not issubclass(mapper.class_, Base):
        return
    session = state.session
    state.statement = state.statement.values(  # type: ignore[attr-defined]
        updated_at=session_clock(session).now(), updated_by=current_actor(session)
    )


def install() -> None:
    """Register the hooks once for every Session (idempotent)."""
    if not event.contains(Session, "before_flush", _stamp_objects):
        event.listen(Session, "before_flush", _stamp_objects)
        event.listen(Session, "do_orm_execute", _stamp_bulk_updates)
