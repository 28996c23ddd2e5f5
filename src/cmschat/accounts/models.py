"""Users, their sign-in tokens and the record of login attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.actors import SYSTEM_SETUP
from cmschat.db.base import MARIADB_TABLE_OPTIONS, Base, IdType, UTCDateTime


class Role(StrEnum):
    """What a user may do: members chat, agents also answer inquiries, admins run the console."""

    member = "member"
    agent = "agent"
    admin = "admin"


class User(Base):
    """A person who signs in."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    """Lower-case sign-in name, unique."""
    display_name: Mapped[str] = mapped_column(String(100), nullable=False)
    """Name shown to others; any script (Korean, emoji)."""
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        nullable=False,
        default=Role.member,
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    """False once disabled: no sign-in, every session ended."""
    must_change_password: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """True for one-time passwords: only the password change is allowed until done."""
    password_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    """bcrypt over an HMAC of the password; never leaves the server."""
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    @property
    def must_change_reason(self) -> str | None:
        """Why a change is required: ``first_start`` (generated, untouched since), or
        ``set_by_admin``; None when none is. Only an admin or the CLI changes a user row
        before its first sign-in, so an untouched setup row still has its generated password.
        """
        if not self.must_change_password:
            return None
        if self.created_by == SYSTEM_SETUP and self.updated_by == SYSTEM_SETUP:
            return "first_start"
        return "set_by_admin"


class AuthToken(Base):
    """A bearer token; only its keyed hash is stored."""

    __tablename__ = "auth_tokens"
    __table_args__ = (
        Index("ix_auth_tokens_user_id_revoked_at", "user_id", "revoked_at"),
        Index("ix_auth_tokens_expires_at", "expires_at"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    """HMAC-SHA-256 of the token, hex."""
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    """Absolute end of the session, however active."""
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    """Last request seen (to a minute); the idle limit counts from here."""
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    client_address: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)


class LoginAttempt(Base):
    """One sign-in attempt, successful or not: who, when, from where."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_created_at", "username", "created_at"),
        Index("ix_login_attempts_created_at", "created_at"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), nullable=False)
    """The name typed, as given (cut to 64), whether or not such a user exists."""
    user_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    """ok, bad_credentials, disabled or rate_limited."""
    client_address: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
