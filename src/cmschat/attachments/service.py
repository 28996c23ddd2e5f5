"""Attachments as messages carry them: linking uploads to a message, and reading them.

Uploading is ``attachments.uploads``; deletion and clean-up are ``attachments.erasure``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.attachments.access import RoomAccess
from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.errors import Invalid, NotFound


async def link_to_message(
    session: AsyncSession,
    *,
    user: User,
    room_id: int,
    message_id: int,
    attachment_ids: Sequence[int],
) -> list[Attachment]:
    """Attach one's own ready, unlinked uploads of this room to a new message."""
    if not attachment_ids:
        return []
    found = (
        await session.scalars(select(Attachment).where(Attachment.id.in_(attachment_ids)))
    ).all()
    by_id = {a.id: a for a in found}
    for attachment_id in attachment_ids:
        attachment = by_id.get(attachment_id)
        if (
            attachment is None
            or attachment.uploader_id != user.id
            or attachment.room_id != room_id
            or attachment.state != AttachmentState.ready
            or attachment.message_id is not None
        ):
            raise Invalid(
                f"attachment {attachment_id} is not an unused upload of yours in this room",
                field="attachment_ids",
            )
    for attachment in found:
        attachment.message_id = message_id
    await session.flush()
    return [by_id[i] for i in attachment_ids]


async def attachments_of(
    session: AsyncSession, message_ids: Sequence[int]
) -> dict[int, list[Attachment]]:
    """Ready attachments per message."""
    if not message_ids:
        return {}
    rows = (
        await session.scalars(
            select(Attachment)
            .where(
                Attachment.message_id.in_(message_ids), Attachment.state == AttachmentState.ready
            )
            .order_by(Attachment.id)
        )
    ).all()
    result: dict[int, list[Attachment]] = {}
    for row in rows:
        assert row.message_id is not None  # noqa: S101 - filtered above
        result.setdefault(row.message_id, []).append(row)
    return result


async def readable_attachment(
    session: AsyncSession, *, user: User, attachment_id: int, rooms: RoomAccess
) -> Attachment:
    """A ready attachment of a room the user belongs to; NotFound for anyone else.

    Until it is sent with a message an upload is its uploader's draft: only they see it.
    """
    attachment = await session.get(Attachment, attachment_id)
    if attachment is None or attachment.state != AttachmentState.ready:
        raise NotFound("no such attachment")
    if attachment.message_id is None and attachment.uploader_id != user.id:
        raise NotFound("no such attachment")
    if not await rooms.is_member(session, user=user, room_id=attachment.room_id):
        raise NotFound("no such attachment")
    return attachment
