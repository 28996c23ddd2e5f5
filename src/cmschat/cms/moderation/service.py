"""Moderation: admins search every room's messages and delete them with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.chat.messages.views import message_views
from cmschat.chat.models import Message
from cmschat.chat.schemas import MessageRead
from cmschat.chat.search import containing

MAX_PAGE = 100


@dataclass(frozen=True)
class MessageFilters:
    """What to look for; every field optional."""

    query: str | None = None
    room_id: int | None = None
    author_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_deleted: bool = False


async def find_messages(
    session: AsyncSession, *, filters: MessageFilters, before: int | None = None, limit: int = 50
) -> tuple[list[MessageRead], int | None]:
    """Messages of any room matching the filters, newest first; and the next page's cursor."""
    limit = max(1, min(limit, MAX_PAGE))
    statement = select(Message).order_by(Message.id.desc()).limit(limit + 1)
    needle = (filters.query or "").strip()
    if needle:
        statement = statement.where(*containing(session, needle))
    if not filters.include_deleted:
        statement = statement.where(Message.deleted_at.is_(None))
    if filters.room_id is not None:
        statement = statement.where(Message.room_id == filters.room_id)
    if filters.author_id is not None:
        statement = statement.where(Message.author_id == filters.author_id)
    if filters.since is not None:
        statement = statement.where(Message.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(Message.created_at < filters.until)
    if before is not None:
        statement = statement.where(Message.id < before)
    rows = list((await session.scalars(statement)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return await message_views(session, rows), rows[-1].id if more else None
