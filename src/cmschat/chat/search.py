"""Searching messages: candidates from the bigram index, exact matches from the content.

See ``search_index`` for why the index holds character pairs. Results come only from
rooms the caller belongs to.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import ColumnElement, Select, Table, and_, func, select
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat.messages.views import message_views
from cmschat.chat.models import Message, RoomMember
from cmschat.chat.schemas import MessageRead
from cmschat.chat.search_index import SQLITE_INDEX, grams, index_table
from cmschat.db.actors import user_actor
from cmschat.db.session import Database
from cmschat.errors import Invalid

MAX_QUERY_TOKENS = 32
MAX_RESULTS = 50


def _candidates(index: Table, tokens: list[str]) -> Select[tuple[int]]:
    """Ids of messages whose index holds every token (tokens are letters and digits only)."""
    if index is SQLITE_INDEX:
        matches = index.c.grams.op("MATCH")(" AND ".join(f'"{t}"' for t in tokens))
    else:
        matches = mysql.match(
            index.c.grams, against=" ".join("+" + t for t in tokens)
        ).in_boolean_mode()
    return select(index.c.message_id).where(matches)


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def containing(session: AsyncSession, needle: str) -> list[ColumnElement[bool]]:
    """Conditions on ``Message`` for "the content contains ``needle``" (any case)."""
    check_query(needle)
    conditions: list[ColumnElement[bool]] = [
        func.lower(Message.content).like(_like_pattern(needle.lower()), escape="\\")
    ]
    tokens = list(dict.fromkeys(grams(needle)))[:MAX_QUERY_TOKENS]
    if tokens:  # a one-character query has none: the substring match alone decides
        conditions.append(Message.id.in_(_candidates(index_table(session), tokens)))
    return conditions


def check_query(query: str) -> None:
    """Refuse control characters: SQLite's LIKE stops at a NUL, so ``%00`` matched all."""
    if any(unicodedata.category(char) == "Cc" for char in query):
        raise Invalid("q must not contain control characters (tabs, newlines, NUL...)", field="q")


async def search_messages(
    session: AsyncSession,
    *,
    user: User,
    query: str,
    room_id: int | None = None,
    limit: int = MAX_RESULTS,
) -> list[MessageRead]:
    """Messages containing ``query`` (any case), newest first, from the caller's rooms only."""
    needle = query.strip()
    if not needle:
        return []
    statement = (
        select(Message)
        .join(
            RoomMember, and_(RoomMember.room_id == Message.room_id, RoomMember.user_id == user.id)
        )
        .where(Message.deleted_at.is_(None), *containing(session, needle))
        .order_by(Message.id.desc())
        .limit(max(1, min(limit, MAX_RESULTS)))
    )
    if room_id is not None:
        statement = statement.where(Message.room_id == room_id)
    return await message_views(session, (await session.scalars(statement)).all())


async def search_where_fresh(
    db: Database,
    session: AsyncSession,
    *,
    user: User,
    query: str,
    room_id: int | None = None,
    limit: int = MAX_RESULTS,
) -> list[MessageRead]:
    """``search_messages`` in the request's ``session``, or with read replicas on one that
    has every commit made so far (db/replicas.py): the request's own read (the caller's
    token) ends first, so it holds one connection at a time, never two."""
    if db.replicas is None:
        return await search_messages(session, user=user, query=query, room_id=room_id, limit=limit)
    await session.commit()
    async with db.fresh_read(user_actor(user.id), actor_name=user.username) as read:
        return await search_messages(read, user=user, query=query, room_id=room_id, limit=limit)
