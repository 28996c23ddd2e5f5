"""API shapes of the console's backups page."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class BackupRead(BaseModel):
    """One backup as listed."""

    id: str
    kind: str
    created_at: datetime | None
    size: int | None
    status: str
    database_kind: str | None
    files: int | None


class CheckRead(BaseModel):
    """One check of a drill."""

    name: str
    ok: bool
    detail: str


class DrillRead(BaseModel):
    """A drill's outcome."""

    backup_id: str
    ran_at: datetime
    ok: bool
    rto_seconds: float
    rpo_seconds: float
    rto_target_seconds: int
    rpo_target_seconds: int
    checks: list[CheckRead]


class BackupsRead(BaseModel):
    """The backups page."""

    items: list[BackupRead]
    last_drill: dict[str, Any] | None
    target: str
    keep_days: int
    schedule: dict[str, Any]
    rto_target_seconds: int
    rpo_target_seconds: int


class StartBackup(BaseModel):
    """What to back up now."""

    kind: Literal["full", "incremental"] = "full"
