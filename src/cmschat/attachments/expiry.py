"""Files past retention: those of purged messages, and those past their own retention.

The retention purge marks what these return for erasure (``erasure.mark_for_erasure``)
inside its per-batch transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.attachments.models import Attachment, AttachmentState


async def files_of_messages(
    session: AsyncSession, *, message_ids: Sequence[int]
) -> Sequence[Attachment]:
    """Every file of these messages not already being erased, however many there are."""
    if not message_ids:
        return []
    return (
        await session.scalars(
            select(Attachment).where(
                Attachment.message_id.in_(message_ids),
                Attachment.state != AttachmentState.deleting,
            )
        )
    ).all()


async def expired_files(
    session: AsyncSession, *, room_id: int, before: datetime, limit: int
) -> Sequence[Attachment]:
    """Up to ``limit`` of the room's oldest files uploaded before ``before``."""
    return (
        await session.scalars(
            select(Attachment)
            .where(
                Attachment.room_id == room_id,
                Attachment.created_at < before,
                Attachment.state != AttachmentState.deleting,
            )
            .order_by(Attachment.id)
            .limit(limit)
        )
    ).all()
