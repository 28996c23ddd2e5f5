"""API shapes of canned replies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cmschat.accounts.schemas import RequestBody
from cmschat.chat.schemas import RoomName

Shortcut = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Body = Annotated[str, Field(min_length=1, max_length=4000)]


class CannedReplyCreate(RequestBody):
    """A new canned reply."""

    shortcut: Shortcut
    title: RoomName
    body: Body


class CannedReplyUpdate(RequestBody):
    """Changes to a canned reply."""

    shortcut: Shortcut | None = None
    title: RoomName | None = None
    body: Body | None = None


class CannedReplyRead(BaseModel):
    """A canned reply."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    shortcut: str
    title: str
    body: str
    updated_at: datetime


class CannedReplyList(BaseModel):
    """Every canned reply, by shortcut."""

    items: list[CannedReplyRead]
    next_cursor: str | None = None
