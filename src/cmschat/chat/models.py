"""Rooms, their members, messages, mentions and the per-room event log.

Each room owns a counter (``last_seq``); every room event takes the next number in the
same transaction as the change it describes, so a room's events are numbered 1..N with no
gap, and a client that has seen N knows exactly what it is missing.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import MEDIUMTEXT
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import MARIADB_TABLE_OPTIONS, Base, IdType, UTCDateTime


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class RoomKind(StrEnum):
    """Direct: exactly two people. Group: invite only. Channel: public, anyone may join."""

    direct = "direct"
    group = "group"
    channel = "channel"


class MemberRole(StrEnum):
    """What a member may do in one room."""

    owner = "owner"
    moderator = "moderator"
    member = "member"


class EventType(StrEnum):
    """Room events that are stored and sequenced (typing and presence are not)."""

    message_created = "message.created"
    message_updated = "message.updated"
    message_deleted = "message.deleted"
    room_updated = "room.updated"
    member_joined = "member.joined"
    member_left = "member.left"


class Room(Base):
    """A conversation."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    kind: Mapped[RoomKind] = mapped_column(
        Enum(RoomKind, native_enum=False, length=16, values_callable=_values), nullable=False
    )
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    topic: Mapped[str | None] = mapped_column(String(250), nullable=True)
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """Archived rooms stay readable but take no new messages or members."""
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    """Sequence number of the room's newest event."""
    direct_key: Mapped[str | None] = mapped_column(String(48), nullable=True, unique=True)
    """``<low id>:<high id>`` for direct rooms, so a pair has exactly one."""
    purged_through_seq: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    """Retention removed the events up to this seq: a client behind it must resync."""


class RoomMember(Base):
    """A user's membership of a room, with their role and read position."""

    __tablename__ = "room_members"
    __table_args__ = (Index("ix_room_members_user_id", "user_id"), MARIADB_TABLE_OPTIONS)

    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[MemberRole] = mapped_column(
        Enum(MemberRole, native_enum=False, length=16, values_callable=_values),
        nullable=False,
        default=MemberRole.member,
    )
    last_read_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    """Room seq up to which the member has read."""


class Message(Base):
    """One message; deleting keeps a tombstone (the row) and drops the content."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="uq_messages_room_id_seq"),
        UniqueConstraint("room_id", "author_id", "client_id", name="uq_messages_client_id"),
        # Retention finds a room's expired messages without walking the ones it keeps.
        Index("ix_messages_room_id_created_at", "room_id", "created_at"),
        # Deleting a message sets its replies' reference to NULL: without an index SQLite
        # scans every message for each one deleted (MariaDB indexes foreign keys itself).
        Index("ix_messages_reply_to_id", "reply_to_id"),
        # The console's activity charts count messages and authors over a time range of
        # every room; with the author in the index the count never reads the table.
        Index("ix_messages_created_at", "created_at", "author_id"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    """The room seq of its ``message.created`` event: history order."""
    author_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The sender's idempotency key: a retried send returns the first message."""
    reply_to_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    )
    content: Mapped[str] = mapped_column(Text, nullable=False)
    """The text exactly as sent (empty once deleted)."""
    content_html: Mapped[str] = mapped_column(Text, nullable=False)
    """Rendered, sanitised HTML of ``content``."""
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    page_tail: Mapped[str | None] = mapped_column(
        Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb"), nullable=True, deferred=True
    )
    """Its history item from ``"content"`` on (``messages.page_tail``), stored by a send
    without files; NULL: built by the page. Cleared by triggers (migration 0010) on any
    change it would show; deferred: no ORM load reads it."""


class Mention(Base):
    """A user @mentioned in a message."""

    __tablename__ = "mentions"
    __table_args__ = (
        Index("ix_mentions_user_id_room_id", "user_id", "room_id"),
        MARIADB_TABLE_OPTIONS,
    )

    message_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    room_id: Mapped[int] = mapped_column(IdType, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    """The message's seq, so unread mentions are those past the read marker."""


class RoomEvent(Base):
    """A sequenced room event, the record clients resume from.

    It holds references, not copies: a replayed ``message.created`` shows the message as
    it is now, so deleted or purged content does not live on here.
    """

    __tablename__ = "room_events"
    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="uq_room_events_room_id_seq"),
        # Purging a message removes every event that refers to it.
        Index("ix_room_events_message_id", "message_id"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[EventType] = mapped_column(
        Enum(EventType, native_enum=False, length=32, values_callable=_values), nullable=False
    )
    message_id: Mapped[int | None] = mapped_column(IdType, nullable=True)
    user_id: Mapped[int | None] = mapped_column(IdType, nullable=True)
    """The member who joined or left."""
