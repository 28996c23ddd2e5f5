"""Reading room events back from the database: for resuming clients and repairing gaps.

Replayed events are built from the current rows, through the same serialisation as live
ones, so a client cannot tell a replayed event from a live one — except that a message
deleted since shows as its tombstone.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat.events import Published
from cmschat.chat.messages import message_views
from cmschat.chat.models import EventType, Message, Room, RoomEvent
from cmschat.realtime.broker import Envelope
from cmschat.realtime.protocol import envelope_of

BATCH = 500


async def resync_point(session: AsyncSession, *, room_id: int, after: int) -> int | None:
    """None if the room's events after ``after`` are all still stored; else the seq to
    resync at (the room's newest), because retention purged some of them."""
    room = (
        await session.execute(
            select(Room.last_seq, Room.purged_through_seq).where(Room.id == room_id)
        )
    ).one_or_none()
    if room is None:
        return None
    first = await session.scalar(
        select(func.min(RoomEvent.seq)).where(RoomEvent.room_id == room_id, RoomEvent.seq > after)
    )
    purged_past_position = after < room.purged_through_seq
    if purged_past_position or (first is not None and first > after + 1):
        return int(room.last_seq)
    return None


async def load_events(
    session: AsyncSession,
    *,
    room_id: int,
    after: int,
    until: int | None = None,
    limit: int = BATCH,
) -> list[Envelope]:
    """Events of a room with ``after < seq <= until``, in order, at most ``limit``."""
    statement = select(RoomEvent).where(RoomEvent.room_id == room_id, RoomEvent.seq > after)
    if until is not None:
        statement = statement.where(RoomEvent.seq <= until)
    events = (await session.scalars(statement.order_by(RoomEvent.seq).limit(limit))).all()
    message_ids = {e.message_id for e in events if e.message_id is not None}
    messages = (
        (await session.scalars(select(Message).where(Message.id.in_(message_ids)))).all()
        if message_ids
        else []
    )
    views = {view.id: view for view in await message_views(session, messages)}
    user_ids = {e.user_id for e in events if e.user_id is not None}
    users = (
        {u.id: u for u in (await session.scalars(select(User).where(User.id.in_(user_ids)))).all()}
        if user_ids
        else {}
    )
    room = await session.get(Room, room_id)
    envelopes = []
    for event in events:
        payload: dict[str, object]
        if event.message_id is not None:
            view = views.get(event.message_id)
            if view is None:  # purged by retention: the event has nothing left to show
                continue
            payload = {"message": view.model_dump(mode="json")}
        elif event.type is EventType.room_updated and room is not None:
            payload = {
                "room": {
                    "id": room.id,
                    "name": room.name,
                    "topic": room.topic,
                    "archived": room.archived,
                }
            }
        else:
            user = users.get(event.user_id) if event.user_id is not None else None
            payload = (
                {
                    "user": {
                        "id": user.id,
                        "username": user.username,
                        "display_name": user.display_name,
                    }
                }
                if user
                else {}
            )
        envelopes.append(
            envelope_of(
                Published(
                    room_id=room_id,
                    seq=event.seq,
                    type=event.type.value,
                    payload=payload,
                    user_id=event.user_id,
                )
            )
        )
    return envelopes
