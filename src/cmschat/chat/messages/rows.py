"""Messages as plain dicts from Core statements: the hot read paths' shape, no ORM objects.

History pages and replays read many messages and only turn them into JSON. Loading ORM
objects and validating a pydantic model per row cost more than the queries themselves,
so these reads select columns and build the ``MessageRead`` shape as dicts, key for key in
its field order, so ``cmschat.jsonbytes`` writes the bytes the pydantic model would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.chat.models import Mention, Message

MESSAGES = Message.__table__
USERS = User.__table__
MENTIONS = Mention.__table__
ATTACHMENTS = Attachment.__table__

ATTACHMENT_FIELDS = (
    "id",
    "room_id",
    "message_id",
    "uploader_id",
    "filename",
    "size",
    "content_type",
    "sha256",
    "is_image",
)
"""``AttachmentRead``'s fields, in its order."""


def message_select() -> Select[Any]:
    """Messages' columns with their author's name (one outer join, not a second query)."""
    m, u = MESSAGES.c, USERS.c
    return select(
        m.id,
        m.room_id,
        m.seq,
        m.author_id,
        u.username,
        u.display_name,
        m.content,
        m.content_html,
        m.reply_to_id,
        m.created_at,
        m.updated_at,
        m.edited_at,
        m.deleted_at,
    ).select_from(MESSAGES.outerjoin(USERS, u.id == m.author_id))


async def message_dicts(session: AsyncSession, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """``MessageRead``-shaped dicts of ``message_select`` rows: two more queries in all."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    mentions: dict[int, list[int]] = {}
    found = await session.execute(
        select(MENTIONS.c.message_id, MENTIONS.c.user_id).where(MENTIONS.c.message_id.in_(ids))
    )
    for message_id, user_id in found:
        mentions.setdefault(message_id, []).append(user_id)
    files: dict[int, list[dict[str, Any]]] = {}
    a = ATTACHMENTS.c
    found = await session.execute(
        select(*(a[name] for name in ATTACHMENT_FIELDS))
        .where(a.message_id.in_(ids), a.state == AttachmentState.ready)
        .order_by(a.id)
    )
    for file in found:
        files.setdefault(file.message_id, []).append(dict(file._mapping))
    return [
        {
            "id": row.id,
            "room_id": row.room_id,
            "seq": row.seq,
            "author": (
                {"id": row.author_id, "username": row.username, "display_name": row.display_name}
                if row.username is not None
                else None
            ),
            "content": row.content,
            "content_html": row.content_html,
            "reply_to": row.reply_to_id,
            "mentions": sorted(mentions.get(row.id, ())),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "edited": row.edited_at is not None,
            "deleted": row.deleted_at is not None,
            "attachments": files.get(row.id, []),
        }
        for row in rows
    ]


async def messages_by_id(session: AsyncSession, ids: Sequence[int]) -> list[dict[str, Any]]:
    """``MessageRead``-shaped dicts of the messages with these ids (any order)."""
    if not ids:
        return []
    rows = (await session.execute(message_select().where(MESSAGES.c.id.in_(ids)))).all()
    return await message_dicts(session, rows)
