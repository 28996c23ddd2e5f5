"""What ``GET /api/v1/admin/monitoring`` returns."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

InstanceState = Literal["ready", "not_ready", "silent", "stopped"]


class InstanceRead(BaseModel):
    """An instance's newest sample."""

    instance: str
    host: str
    version: str
    started_at: datetime
    last_seen: datetime
    state: InstanceState
    """``silent``: no sample for a few minutes (crashed, killed or cut off); ``stopped``:
    its last sample said it stopped gracefully (a release, a scale-down)."""
    checks: dict[str, str]
    """Its readiness checks at the last sample, e.g. ``{"database": "ok"}``."""


class MinuteRead(BaseModel):
    """One minute across every instance."""

    at: datetime
    requests: int
    errors: int
    p95_ms: float | None
    """The slowest instance's p95 (percentiles do not add up)."""
    websockets: int
    instances: int
    """How many instances sampled this minute."""


class HourRead(BaseModel):
    """Messages stored in one hour (from the database)."""

    at: datetime
    messages: int


class DayRead(BaseModel):
    """One day in the viewer's time zone (from the database)."""

    day: datetime
    """When the day starts (UTC)."""
    messages: int
    active_users: int
    """Distinct people who sent at least one message that day."""


class AlertRead(BaseModel):
    """A firing alert as Alertmanager reports it."""

    name: str
    severity: str
    since: datetime | None
    summary: str


class AlertsRead(BaseModel):
    """Alertmanager's firing alerts, or why they cannot be shown."""

    state: Literal["not_configured", "ok", "unreachable"]
    detail: str | None = None
    total: int = 0
    items: list[AlertRead] = []


class MonitoringRead(BaseModel):
    """Everything the console's dashboard and monitoring pages chart."""

    now: datetime
    hours: int
    instances: list[InstanceRead]
    traffic: list[MinuteRead]
    messages_per_hour: list[HourRead]
    days: list[DayRead]
    alerts: AlertsRead
