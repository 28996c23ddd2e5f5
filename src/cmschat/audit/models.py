"""The audit trail's tables: the append-only events and the chain head that serialises appends.

They carry none of the ``created_*``/``updated_*`` columns other tables have: an audit event
is never updated, and its own fields say who wrote it and when.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cmschat.db.base import MARIADB_TABLE_OPTIONS, Base, IdType, UTCDateTime

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the very first event."""


class LedgerBase(DeclarativeBase):
    """Base of the audit tables: same metadata as every other table, no audit columns."""

    metadata = Base.metadata


class AuditEvent(LedgerBase):
    """One audited change. Rows are only ever inserted (triggers refuse the rest)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_occurred_at", "occurred_at"),
        Index("ix_audit_events_actor_id", "actor_id"),
        Index("ix_audit_events_action", "action"),
        Index("ix_audit_events_target_type_target_id", "target_type", "target_id"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Position in the chain: 1, 2, 3 … with no gap, assigned under the head's lock."""
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    """``user:<id>`` or ``system:<job>``, as in the ``created_by`` columns."""
    actor_id: Mapped[int | None] = mapped_column(IdType, nullable=True)
    """The acting user's id (no foreign key: the trail outlives what it describes)."""
    actor_name: Mapped[str] = mapped_column(String(64), nullable=False)
    """Username at the time, or the system job's name."""
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    """Dotted verb, e.g. ``message.deleted``, ``user.role_changed``, ``auth.login_failed``."""
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_address: Mapped[str | None] = mapped_column(String(45), nullable=True)
    changes: Mapped[str] = mapped_column(Text, nullable=False)
    """Canonical JSON: ``{"field": [before, after]}`` and details; never secrets or bodies."""
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    """SHA-256 of ``prev_hash`` followed by the canonical JSON of this event."""


class AuditHead(LedgerBase):
    """The chain's newest link, one row: locking it is how appends take turns."""

    __tablename__ = "audit_head"
    __table_args__ = (MARIADB_TABLE_OPTIONS,)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=False)
    """Always 1."""
    last_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False)
