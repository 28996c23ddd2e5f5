"""API shapes for rooms and messages."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cmschat.accounts.schemas import RequestBody
from cmschat.attachments.schemas import AttachmentRead
from cmschat.chat.models import MemberRole, RoomKind


def _clean_line(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise ValueError("must not contain control or invisible formatting characters")
    return value


RoomName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_clean_line)]
Topic = Annotated[str, Field(max_length=250), AfterValidator(_clean_line)]
ClientId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
UserId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class UserBrief(BaseModel):
    """Who wrote or joined: enough to show a name."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str


class MessageRead(BaseModel):
    """A message as clients see it, over HTTP and in ``message.*`` events."""

    id: int
    room_id: int
    seq: int
    author: UserBrief | None
    content: str
    content_html: str
    reply_to: int | None
    mentions: list[int]
    created_at: datetime
    updated_at: datetime
    edited: bool
    deleted: bool
    attachments: list[AttachmentRead]


class MessagePage(BaseModel):
    """History, newest first."""

    items: list[MessageRead]
    next_cursor: int | None
    """Pass as ``before`` (or ``after``, when paging forward) for the next page."""


AttachmentIds = Annotated[list[Annotated[int, Field(ge=1, le=2**63 - 1)]], Field(max_length=10)]


class MessageCreate(RequestBody):
    """A new message: text, files uploaded to the room beforehand, or both."""

    content: str = Field(default="", max_length=100_000)
    client_id: ClientId | None = None
    reply_to: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    attachment_ids: AttachmentIds = Field(default_factory=list)


class MessageUpdate(RequestBody):
    """An edit of one's own message."""

    content: str = Field(min_length=1, max_length=100_000)


class MemberRead(BaseModel):
    """A member of a room."""

    user: UserBrief
    role: MemberRole
    last_read_seq: int


class RoomRead(BaseModel):
    """A room as its members see it."""

    id: int
    kind: RoomKind
    name: str | None
    topic: str | None
    archived: bool
    last_seq: int
    members: list[MemberRead]
    my_role: MemberRole | None
    unread_count: int
    mention_count: int
    last_message: MessageRead | None
    created_at: datetime
    updated_at: datetime


class RoomPage(BaseModel):
    """Rooms, most recently active first."""

    items: list[RoomRead]
    next_cursor: str | None


class RoomCreate(RequestBody):
    """A new room; for ``direct`` give exactly one other member."""

    kind: RoomKind
    name: RoomName | None = None
    topic: Topic | None = None
    member_ids: list[UserId] = Field(default_factory=list, max_length=500)


class RoomUpdate(RequestBody):
    """Rename, change the topic, archive or unarchive."""

    name: RoomName | None = None
    topic: Topic | None = None
    archived: bool | None = None


class MembersAdd(RequestBody):
    """Users to add (anyone may add themselves to a channel)."""

    user_ids: list[UserId] = Field(min_length=1, max_length=500)


class MemberUpdate(RequestBody):
    """A member's new role in the room."""

    role: MemberRole


class ReadMarker(RequestBody):
    """The newest message the user has read."""

    message_id: Annotated[int, Field(ge=1, le=2**63 - 1)]


class ChannelRead(BaseModel):
    """A public channel as anyone may see it before joining."""

    id: int
    name: str | None
    topic: str | None


class ChannelPage(BaseModel):
    """Public channels."""

    items: list[ChannelRead]
    next_cursor: str | None


class ReadState(BaseModel):
    """Where the caller's read marker stands."""

    room_id: int
    last_read_seq: int
