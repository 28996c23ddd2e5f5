"""API shapes of the audit trail."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AuditEventRead(BaseModel):
    """One audit event as the console shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    actor: str
    actor_id: int | None
    actor_name: str
    action: str
    target_type: str
    target_id: str | None
    request_id: str | None
    client_address: str | None
    changes: dict[str, Any] = Field(description="{field: [before, after]} and details")
    prev_hash: str
    hash: str

    @field_validator("changes", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class AuditPage(BaseModel):
    """A page of events, newest first."""

    items: list[AuditEventRead]
    next_cursor: str | None


class VerifyResult(BaseModel):
    """The result of walking the chain."""

    ok: bool
    checked: int
    head_id: int
    head_hash: str
    first_bad_id: int | None
    problem: str | None
    message: str
