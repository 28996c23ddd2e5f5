"""Messages as plain dicts from Core statements: the hot read paths' shape, no ORM objects.

History pages and replays read many messages and only turn them into JSON. Loading ORM
objects and validating a pydantic model per row cost more than the queries themselves,
so these reads select columns and build the ``MessageRead`` shape as dicts, key for key in
its field order, so ``cmschat.jsonbytes`` writes the bytes the pydantic model would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Select, bindparam, select
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


_MENTIONS_OF = select(MENTIONS.c.message_id, MENTIONS.c.user_id).where(
    MENTIONS.c.message_id.in_(bindparam("ids", expanding=True))
)
_FILES_OF = (
    select(*(ATTACHMENTS.c[name] for name in ATTACHMENT_FIELDS))
    .where(
        ATTACHMENTS.c.message_id.in_(bindparam("ids", expanding=True)),
        ATTACHMENTS.c.state == AttachmentState.ready,
    )
    .order_by(ATTACHMENTS.c.id)
)
"""Built once: a page's queries differ only in their parameters."""


async def message_dicts(session: AsyncSession, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """``MessageRead``-shaped dicts of ``message_select`` rows: two more queries in all."""
    if not rows:
        return []
    ids = {"ids": [row[0] for row in rows]}
    mentions: dict[int, list[int]] = {}
    for message_id, user_id in await session.execute(_MENTIONS_OF, ids):
        mentions.setdefault(message_id, []).append(user_id)
    files = _files_by_message(await session.execute(_FILES_OF, ids))
    return _dicts(cast(Sequence[tuple[Any, ...]], rows), mentions, files)


def _files_by_message(found: Iterable[Sequence[Any]]) -> dict[int, list[dict[str, Any]]]:
    files: dict[int, list[dict[str, Any]]] = {}
    for file in found:
        shape = dict(zip(ATTACHMENT_FIELDS, file, strict=True))
        shape["is_image"] = bool(shape["is_image"])
        files.setdefault(file[2], []).append(shape)
    return files


def _dicts(
    rows: Sequence[tuple[Any, ...]],
    mentions: dict[int, list[int]],
    files: dict[int, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    views = []
    # Tuple unpacking: a page builds hundreds of these, and Row attribute lookups cost more
    # than everything else here together.
    for (
        message_id,
        room_id,
        seq,
        author_id,
        username,
        display_name,
        content,
        content_html,
        reply_to_id,
        created_at,
        updated_at,
        edited_at,
        deleted_at,
    ) in rows:
        views.append(
            {
                "id": message_id,
                "room_id": room_id,
                "seq": seq,
                "author": (
                    {"id": author_id, "username": username, "display_name": display_name}
                    if username is not None
                    else None
                ),
                "content": content,
                "content_html": content_html,
                "reply_to": reply_to_id,
                "mentions": sorted(mentions.get(message_id, ())),
                "created_at": created_at,
                "updated_at": updated_at,
                "edited": edited_at is not None,
                "deleted": deleted_at is not None,
                "attachments": files.get(message_id, []),
            }
        )
    return views


async def messages_by_id(session: AsyncSession, ids: Sequence[int]) -> list[dict[str, Any]]:
    """``MessageRead``-shaped dicts of the messages with these ids (any order)."""
    if not ids:
        return []
    rows = (await session.execute(message_select().where(MESSAGES.c.id.in_(ids)))).all()
    return await message_dicts(session, rows)
