"""What attachments need to know of rooms, without importing the chat package.

Messages carry attachments, so chat imports attachments; the other way round would be a
loop. Whether a user may post into or read from a room is chat's rule
(``chat/permissions.py``, which satisfies this protocol as it is); the routes pass it in.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User


class RoomAccess(Protocol):
    """Room membership rules, as ``cmschat.chat.permissions`` defines them."""

    async def require_open_member_room(
        self, session: AsyncSession, *, user: User, room_id: int
    ) -> object:
        """Refuse (NotFound, Conflict) unless the user may post into the room."""
        ...

    async def is_member(self, session: AsyncSession, *, user: User, room_id: int) -> bool:
        """Whether the user belongs to the room."""
        ...
