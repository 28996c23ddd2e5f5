"""Retention policies: one global default, per-room overrides and legal holds, and the
progress of a purge that has not finished a room yet."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import Base, IdType

DEFAULTS_ID = 1


class RetentionDefaults(Base):
    """The global policy, once an admin has set one (until then the settings' values hold)."""

    __tablename__ = "retention_defaults"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=False)
    """Always 1."""
    message_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Messages older than this many days are purged; NULL keeps them forever."""
    attachment_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Files older than this many days are purged (their message stays); NULL: forever."""


class RoomRetention(Base):
    """A room's own policy: overrides of the defaults, and a legal hold."""

    __tablename__ = "room_retention"

    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    message_override: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """False: the room follows the global message policy."""
    message_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """With the override: days to keep messages, NULL for forever."""
    attachment_override: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    attachment_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    legal_hold: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """While set, nothing in the room is purged, whatever the policy says."""
    legal_hold_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)


class RetentionProgress(Base):
    """What a purge has removed from a room so far, written with each batch.

    A purge interrupted midway leaves this row; the next run adds to it, so the room's
    one ``retention.purged`` audit event still counts everything removed.
    """

    __tablename__ = "retention_progress"

    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    messages: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    attachments: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    """How many runs contributed (more than one after an interruption)."""
