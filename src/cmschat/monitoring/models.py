"""Per-minute samples each instance writes about itself, for the console's charts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import MARIADB_TABLE_OPTIONS, Base, IdType, UTCDateTime


class InstanceSample(Base):
    """One instance's minute: its health and traffic. Pruned after a bound (48 h by default)."""

    __tablename__ = "instance_samples"
    __table_args__ = (
        # One row per instance and minute; the sampler adds to it if it runs twice.
        UniqueConstraint("instance", "minute", name="uq_instance_samples_instance_minute"),
        # Charts read a time range across every instance; pruning deletes the oldest.
        Index("ix_instance_samples_minute", "minute"),
        MARIADB_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(String(128), nullable=False)
    """``host:pid`` of the process that wrote it."""
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    """The minute (UTC, seconds zero) the sample covers."""
    host: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    """When the process started: a restart shows as a new start time."""
    ready: Mapped[bool] = mapped_column(Boolean, nullable=False)
    """What its ``/readyz`` said at the sample."""
    checks: Mapped[str] = mapped_column(String(255), nullable=False)
    """The readiness checks, ``name=state`` comma-separated (e.g. ``database=ok``)."""
    requests: Mapped[int] = mapped_column(Integer, nullable=False)
    """HTTP requests answered in the minute (probes and scrapes left out)."""
    errors: Mapped[int] = mapped_column(Integer, nullable=False)
    """Of those, answered with a 5xx status."""
    p95_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    """95th percentile of request time in the minute; NULL with no requests."""
    websockets: Mapped[int] = mapped_column(Integer, nullable=False)
    """WebSocket connections open at the sample."""
    messages: Mapped[int] = mapped_column(Integer, nullable=False)
    """Chat messages this instance stored in the minute."""
