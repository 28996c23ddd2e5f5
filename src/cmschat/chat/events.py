"""Room sequence numbers and the event log.

``append_event`` is the only way a room event comes to exist: it takes the room's next
``seq`` under the room row's write lock (MariaDB) or the database write lock (SQLite), so
concurrent writers on any number of processes number a room's events 1..N with no gap.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from cmschat.chat.models import EventType, Room, RoomEvent
from cmschat.events import EVERYONE, Published

__all__ = ["EVERYONE", "Published", "append_event", "next_seq"]


async def next_seq(session: AsyncSession, *, room_id: int) -> int:
    """Reserve the room's next sequence number (the row stays locked until commit)."""
    # Core UPDATE on the table: a new message is not a change of the room, so the room's
    # updated_by/updated_at must not become "last sender".
    rooms = cast(Table, Room.__table__)
    await session.execute(
        update(rooms).where(rooms.c.id == room_id).values(last_seq=rooms.c.last_seq + 1)
    )
    seq = await session.scalar(select(Room.last_seq).where(Room.id == room_id))
    if seq is None:
        raise LookupError(f"room {room_id} vanished")
    # Keep a loaded Room in step with the row (without marking it changed).
    loaded = session.identity_map.get(identity_key(Room, room_id))
    if loaded is not None:
        set_committed_value(loaded, "last_seq", int(seq))
    return int(seq)


async def append_event(
    session: AsyncSession,
    *,
    room_id: int,
    type: EventType,
    message_id: int | None = None,
    user_id: int | None = None,
    seq: int | None = None,
) -> RoomEvent:
    """Record a room event with the next seq (or with ``seq`` already reserved for it)."""
    if seq is None:
        seq = await next_seq(session, room_id=room_id)
    event = RoomEvent(room_id=room_id, seq=seq, type=type, message_id=message_id, user_id=user_id)
    session.add(event)
    return event
