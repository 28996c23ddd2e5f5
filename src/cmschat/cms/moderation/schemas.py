"""API shapes for moderation."""

from __future__ import annotations

from pydantic import BaseModel

from cmschat.chat.schemas import MessageRead


class ModerationPage(BaseModel):
    """Messages from every room, newest first."""

    items: list[MessageRead]
    next_cursor: int | None
