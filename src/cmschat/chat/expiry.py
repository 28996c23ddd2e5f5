"""Messages past their room's retention: finding them, and removing them with their traces.

Called by the retention purge inside its per-batch transaction; these functions only
flush, the purge commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.chat import search_index
from cmschat.chat.models import Mention, Message, Room, RoomEvent


async def expired_messages(
    session: AsyncSession, *, room_id: int, before: datetime, limit: int
) -> tuple[list[int], int]:
    """The ids of up to ``limit`` of the room's oldest messages sent before ``before``,
    and the newest seq among them (0 if none)."""
    rows = (
        await session.execute(
            select(Message.id, Message.seq)
            .where(Message.room_id == room_id, Message.created_at < before)
            .order_by(Message.seq)
            .limit(limit)
        )
    ).all()
    return [row.id for row in rows], max((row.seq for row in rows), default=0)


async def delete_messages(
    session: AsyncSession, *, room_id: int, message_ids: Sequence[int], through_seq: int
) -> None:
    """Remove these messages of a room for good, with mentions, search entries and events.

    ``through_seq`` is the newest of them: the room's history is purged up to there.
    """
    rooms = cast(Table, Room.__table__)
    # The room's row first, as every send takes it (its seq) before it inserts: a reply
    # to a doomed message then either committed before (and the UPDATE below nulls it,
    # its trigger clearing its tail) or waits and fails its key check. Without it, under
    # READ COMMITTED, a reply inserted between that UPDATE and the DELETE is nulled by the
    # key's ON DELETE SET NULL, which InnoDB runs without triggers: its stored tail would
    # keep "reply_to". (SQLite has one writer, and no FOR UPDATE.)
    await session.execute(select(rooms.c.id).where(rooms.c.id == room_id).with_for_update())
    await session.execute(delete(Mention).where(Mention.message_id.in_(message_ids)))
    await search_index.unindex_messages(session, message_ids=message_ids)
    # Everything up to the newest purged message is history now, and any later event
    # about a purged message (an edit) would have nothing left to show.
    await session.execute(
        delete(RoomEvent).where(RoomEvent.room_id == room_id, RoomEvent.seq <= through_seq)
    )
    await session.execute(delete(RoomEvent).where(RoomEvent.message_id.in_(message_ids)))
    # Replies to a purged message keep their own text; their reference goes.
    await session.execute(
        update(Message)
        .where(Message.reply_to_id.in_(message_ids))
        .values(reply_to_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(delete(Message).where(Message.id.in_(message_ids)))
    # Core, like the seq counter: a purge is not an edit of the room.
    await session.execute(
        update(rooms)
        .where(rooms.c.id == room_id, rooms.c.purged_through_seq < through_seq)
        .values(purged_through_seq=through_seq)
    )
