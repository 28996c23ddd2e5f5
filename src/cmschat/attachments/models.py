"""Attachments: metadata rows; the bytes live in storage under a random key."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import MARIADB_TABLE_OPTIONS, Base, IdType


class AttachmentState(StrEnum):
    """Where an attachment is in its life.

    A row exists before its bytes do and outlives them, so storage never holds bytes that
    no row points at: a crash mid-upload or mid-delete leaves a row the cleanup job finishes.
    """

    uploading = "uploading"
    ready = "ready"
    deleting = "deleting"


class Attachment(Base):
    """A file uploaded to a room, linked to the message that carries it."""

    __tablename__ = "attachments"
    __table_args__ = (
        Index("ix_attachments_state_created_at", "state", "created_at"),
        Index("ix_attachments_uploader_id_state", "uploader_id", "state"),
        Index("ix_attachments_message_id", "message_id"),
        Index("ix_attachments_room_id_created_at", "room_id", "created_at"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    )
    uploader_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    message_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    )
    """The message carrying it; unlinked uploads are removed after a while."""
    state: Mapped[AttachmentState] = mapped_column(
        Enum(
            AttachmentState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        nullable=False,
    )
    storage_key: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    """Random key in storage; never derived from the user's file name."""
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    """The name shown and offered on download (checked, never used as a path)."""
    content_type: Mapped[str] = mapped_column(String(127), nullable=False)
    """The type the content was verified as, and is served with."""
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    is_image: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """True only when the bytes were decoded as an image (so it may be shown inline)."""
