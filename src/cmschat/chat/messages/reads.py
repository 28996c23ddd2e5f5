"""Reading messages back: history pages, unread counts, and the replay of a room's
events for resuming WebSocket clients and for repairing gaps in live delivery."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat import permissions
from cmschat.chat.messages.views import message_views
from cmschat.chat.models import EventType, Mention, Message, Room, RoomEvent, RoomMember
from cmschat.chat.schemas import MessageRead
from cmschat.errors import Invalid
from cmschat.events import Published

MAX_PAGE = 100


async def history(
    session: AsyncSession,
    *,
    user: User,
    room_id: int,
    before: int | None,
    after: int | None,
    limit: int,
) -> tuple[list[MessageRead], int | None]:
    """A page of messages, newest first; ``before``/``after`` are message seqs."""
    if before is not None and after is not None:
        raise Invalid("give before or after, not both", field="after")
    await permissions.require_member(session, user=user, room_id=room_id)
    limit = max(1, min(limit, MAX_PAGE))
    # MariaDB would walk a big room's index from its newest message down to the cursor
    # ("ref" on room_id); the hint makes it seek straight to the cursor ("range").
    statement = (
        select(Message)
        .with_hint(Message, "FORCE INDEX (uq_messages_room_id_seq)", dialect_name="mysql")
        .where(Message.room_id == room_id)
    )
    if after is not None:
        statement = statement.where(Message.seq > after).order_by(Message.seq.asc())
    else:
        if before is not None:
            statement = statement.where(Message.seq < before)
        statement = statement.order_by(Message.seq.desc())
    rows = list((await session.scalars(statement.limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if after is not None:
        next_cursor = rows[-1].seq if more else None
        rows.reverse()
    else:
        next_cursor = rows[-1].seq if more else None
    return await message_views(session, rows), next_cursor


async def unread_counts(
    session: AsyncSession, *, user: User, room_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """Per room: (unread messages by others, unread mentions of the user)."""
    if not room_ids:
        return {}
    unread = dict(
        (
            await session.execute(
                select(Message.room_id, func.count())
                .join(
                    RoomMember,
                    (RoomMember.room_id == Message.room_id) & (RoomMember.user_id == user.id),
                )
                .where(
                    Message.room_id.in_(room_ids),
                    Message.seq > RoomMember.last_read_seq,
                    Message.deleted_at.is_(None),
                    Message.author_id != user.id,
                )
                .group_by(Message.room_id)
            )
        ).all()
    )
    mentions = dict(
        (
            await session.execute(
                select(Mention.room_id, func.count())
                .join(
                    RoomMember,
                    (RoomMember.room_id == Mention.room_id) & (RoomMember.user_id == user.id),
                )
                .where(
                    Mention.user_id == user.id,
                    Mention.room_id.in_(room_ids),
                    Mention.seq > RoomMember.last_read_seq,
                )
                .group_by(Mention.room_id)
            )
        ).all()
    )
    return {
        room_id: (int(unread.get(room_id, 0)), int(mentions.get(room_id, 0)))
        for room_id in room_ids
    }


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
    limit: int,
) -> list[Published]:
    """Events of a room with ``after < seq <= until``, in order, at most ``limit``.

    Built from the current rows, through the same shapes as live events, so a client
    cannot tell a replayed event from a live one, except that a message deleted since
    shows as its tombstone.
    """
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
    replayed = []
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
        replayed.append(
            Published(
                room_id=room_id,
                seq=event.seq,
                type=event.type.value,
                payload=payload,
                user_id=event.user_id,
            )
        )
    return replayed
