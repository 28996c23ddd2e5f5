"""Canned replies."""

from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import Base, IdType


class CannedReply(Base):
    """A reply agents insert by typing ``/`` and its shortcut."""

    __tablename__ = "canned_replies"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    shortcut: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    """What follows the ``/``: lower-case letters, digits, ``-`` and ``_``."""
    title: Mapped[str] = mapped_column(String(100), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    """Inserted into the composer as typed text (markdown subset), never as HTML."""
