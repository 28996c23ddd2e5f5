"""Notices and the rooms a targeted notice is for."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import MARIADB_TABLE_OPTIONS, Base, IdType, UTCDateTime


class NoticeState(StrEnum):
    """Drafts are seen only in the console; published notices by their audience."""

    draft = "draft"
    published = "published"
    unpublished = "unpublished"


class Notice(Base):
    """An announcement."""

    __tablename__ = "notices"
    __table_args__ = (
        Index("ix_notices_state_published_at", "state", "published_at"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body_html: Mapped[str] = mapped_column(Text, nullable=False)
    """Rich text as the editor sent it, sanitised with nh3 before it is stored."""
    state: Mapped[NoticeState] = mapped_column(
        Enum(
            NoticeState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        nullable=False,
        default=NoticeState.draft,
    )
    for_everyone: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    """False: only members of the notice's rooms see it."""
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class NoticeRoom(Base):
    """A room a targeted notice is shown in."""

    __tablename__ = "notice_rooms"
    __table_args__ = (Index("ix_notice_rooms_room_id", "room_id"), MARIADB_TABLE_OPTIONS)

    notice_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("notices.id", ondelete="CASCADE"), primary_key=True
    )
    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
