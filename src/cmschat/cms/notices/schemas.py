"""API shapes of notices."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cmschat.accounts.schemas import RequestBody
from cmschat.chat.schemas import RoomName
from cmschat.cms.notices.models import NoticeState

RoomIds = Annotated[list[Annotated[int, Field(ge=1, le=2**63 - 1)]], Field(max_length=500)]
Title = Annotated[RoomName, Field(max_length=200)]
BodyHtml = Annotated[str, Field(min_length=1, max_length=100_000)]


class NoticeCreate(RequestBody):
    """A new notice (a draft until published). No ``room_ids``: for everyone."""

    title: Title
    body_html: BodyHtml = Field(description="rich text; sanitised on the server")
    room_ids: RoomIds | None = None


class NoticeUpdate(RequestBody):
    """Changes to a notice; ``room_ids: null`` makes it for everyone."""

    title: Title | None = None
    body_html: BodyHtml | None = None
    room_ids: RoomIds | None = None


class NoticeRead(BaseModel):
    """A notice as members see it (and as ``notice.published`` carries it)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    body_html: str
    published_at: datetime | None


class AdminNoticeRead(NoticeRead):
    """A notice in the console."""

    state: NoticeState
    room_ids: list[int] | None = Field(description="null: for everyone")
    created_at: datetime
    created_by: str
    updated_at: datetime


class NoticePage(BaseModel):
    """Notices, newest first."""

    items: list[NoticeRead]
    next_cursor: str | None


class AdminNoticePage(BaseModel):
    """Notices in the console, newest first."""

    items: list[AdminNoticeRead]
    next_cursor: str | None
