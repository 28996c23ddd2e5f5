"""Declarative base: naming convention, MariaDB table options, UTC times and audit columns.

Every table gets ``created_at``, ``created_by``, ``updated_at`` and ``updated_by``. They are
filled by ``cmschat.db.audit_columns`` from the session's actor and clock, never by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# InnoDB for transactions and row locks; utf8mb4 so Korean and emoji round-trip.
MARIADB_TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}

# Ids: BIGINT on MariaDB; SQLite only auto-increments an INTEGER PRIMARY KEY.
IdType = BigInteger().with_variant(Integer(), "sqlite")

ACTOR_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored as naive UTC with microseconds on every backend."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        """DATETIME(6) on MariaDB so sub-second order survives."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes: they are always a bug here."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Give back an aware UTC datetime."""
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base of every ORM model; carries the audit columns every table must have."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    __table_args__: Any = MARIADB_TABLE_OPTIONS

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    """When the row was inserted (UTC)."""
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), nullable=False)
    """Who inserted it: ``user:<id>`` or ``system:<job>``."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    """When the row last changed (UTC)."""
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), nullable=False)
    """Who last changed it: ``user:<id>`` or ``system:<job>``."""
