"""API shapes for the console's overview: rooms with their numbers, and the dashboard."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from cmschat.accounts.schemas import AdminUserRead
from cmschat.chat.models import MemberRole, RoomKind


class RoomSummary(BaseModel):
    """A room as the console lists it."""

    id: int
    kind: RoomKind
    name: str | None
    topic: str | None
    archived: bool
    member_count: int
    last_seq: int
    last_message_at: datetime | None
    legal_hold: bool


class AuditStatus(BaseModel):
    """The newest events of the audit chain, checked now."""

    ok: bool
    checked: int
    head_id: int
    message: str


class Dashboard(BaseModel):
    """The numbers on the console's first page."""

    users_total: int
    users_active: int
    admins: int
    agents: int
    online: int
    """Users with a connection on any instance."""
    online_here: int
    """Users with a connection on the instance that answered."""
    rooms_total: int
    rooms_archived: int
    messages_today: int
    storage_bytes: int
    audit: AuditStatus
    retention_last_completed_at: datetime | None


class AdminRoomPage(BaseModel):
    """Rooms in id order."""

    items: list[RoomSummary]
    next_cursor: str | None


class AdminMemberRead(BaseModel):
    """A member of a room, with their account."""

    user: AdminUserRead
    role: MemberRole


class AdminRoomDetail(RoomSummary):
    """A room and its members."""

    members: list[AdminMemberRead]
