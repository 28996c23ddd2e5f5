"""Leases: which instance runs a job right now, and when the job last completed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from cmschat.db.base import Base, UTCDateTime


class JobLease(Base):
    """One row per job. Holding an unexpired lease makes an instance the job's leader."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """``host:pid:random`` of the leader; NULL when free."""
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """A leader that dies loses the lease at this time; a live one renews it."""
    last_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """When a run last finished: the schedule runs the job when this is before its slot."""
