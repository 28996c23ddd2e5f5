"""API shapes of retention policies and previews.

Days are whole days; ``null`` means keep forever. In a room's policy, a field left out
follows the global default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from cmschat.accounts.schemas import RequestBody
from cmschat.settings import MAX_RETENTION_DAYS

Days = Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)]
RoomIdField = Annotated[int, Field(ge=1, le=2**63 - 1)]


class DefaultsWrite(RequestBody):
    """The global policy."""

    message_days: Days | None = Field(description="null: keep messages forever")
    attachment_days: Days | None = Field(description="null: keep files forever")


class DefaultsRead(BaseModel):
    """The global policy, and where it comes from."""

    message_days: int | None
    attachment_days: int | None
    source: str = Field(description="'console' once set here; 'settings' until then")


class RoomPolicyWrite(RequestBody):
    """A room's own policy; leave a days field out to follow the default."""

    message_days: Days | None = None
    attachment_days: Days | None = None
    legal_hold: bool = False
    legal_hold_reason: Annotated[str | None, Field(max_length=255)] = None


class RoomPolicyRead(BaseModel):
    """A room's policy: its overrides and what applies."""

    room_id: int
    room_name: str | None
    message_days: int | str | None = Field(description="days, null (forever) or 'inherit'")
    attachment_days: int | str | None = Field(description="days, null (forever) or 'inherit'")
    legal_hold: bool
    legal_hold_reason: str | None
    effective_message_days: int | None
    effective_attachment_days: int | None


class ScheduleRead(BaseModel):
    """When the purge runs."""

    run_daily: bool
    run_at: str = Field(description="daily start, HH:MM in UTC")
    last_completed_at: datetime | None
    audit_days: int


class RetentionRead(BaseModel):
    """Everything the console's retention page shows."""

    defaults: DefaultsRead
    rooms: list[RoomPolicyRead] = Field(description="rooms with a policy of their own")
    schedule: ScheduleRead


class RoomProposal(RoomPolicyWrite):
    """A room policy to try out in a preview."""

    room_id: RoomIdField


class DefaultsPreview(RequestBody):
    """Defaults to try; a field left out keeps the current value."""

    message_days: Days | None = None
    attachment_days: Days | None = None


class PreviewRequest(RequestBody):
    """Policy changes to preview before saving them; nothing is changed."""

    defaults: DefaultsPreview | None = None
    rooms: list[RoomProposal] = Field(default_factory=list, max_length=1000)


class RoomLossRead(BaseModel):
    """What one room would lose."""

    room_id: int
    room_name: str | None
    legal_hold: bool
    message_cutoff: datetime | None
    attachment_cutoff: datetime | None
    messages: int
    attachments: int
    bytes: int


class PreviewRead(BaseModel):
    """What a purge run now would remove, per room and in total."""

    generated_at: datetime
    rooms: list[RoomLossRead]
    messages: int
    attachments: int
    bytes: int
