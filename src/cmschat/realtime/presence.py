"""Presence: who is connected, told to the people who share a room with them.

Presence is a hint, like typing: not stored, not sequenced, and it may be lost. Each
instance announces a user online at their first connection to it and offline when their
last one closes. (With several instances a user connected to two of them is announced
offline when one of those connections ends; clients treat presence as advisory.)
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cmschat.chat.models import RoomMember
from cmschat.realtime.broker import Envelope
from cmschat.realtime.protocol import dumps


async def contacts_of(session: AsyncSession, *, user_id: int) -> tuple[int, ...]:
    """Everyone who shares at least one room with the user."""
    mine, theirs = aliased(RoomMember), aliased(RoomMember)
    rows = await session.scalars(
        select(theirs.user_id)
        .distinct()
        .join(mine, mine.room_id == theirs.room_id)
        .where(mine.user_id == user_id, theirs.user_id != user_id)
    )
    return tuple(sorted(rows.all()))


def presence_envelope(user_id: int, status: str, contacts: tuple[int, ...]) -> Envelope:
    """``presence`` for the user's contacts' connections."""
    return Envelope(
        room_id=0,
        seq=None,
        type="presence",
        frame=dumps({"type": "presence", "user_id": user_id, "status": status}),
        only_user_ids=contacts,
    )
