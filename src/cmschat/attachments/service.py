"""Attachments as messages carry them: linking uploads to a message, and reading them.

Uploading is ``attachments.uploads``; deletion and clean-up are ``attachments.erasure``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
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
    files = await linkable(session, user=user, room_id=room_id, attachment_ids=attachment_ids)
    for attachment in files:
        attachment.message_id = message_id
    await session.flush()
    return files


async def linkable(
    session: AsyncSession, *, user: User, room_id: int, attachment_ids: Sequence[int]
) -> list[Attachment]:
    """One's own ready, unlinked uploads of this room, in the order asked; Invalid if not."""
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
            raise not_linkable(attachment_id)
    return [by_id[i] for i in attachment_ids]


def not_linkable(attachment_id: int) -> Invalid:
    """The error of an attachment a message may not carry."""
    return Invalid(
        f"attachment {attachment_id} is not an unused upload of yours in this room",
        field="attachment_ids",
    )


async def still_free(session: AsyncSession, attachment_ids: Collection[int]) -> set[int]:
    """Which of these uploads are still ready and linked to no message."""
    if not attachment_ids:
        return set()
    table = cast(Table, Attachment.__table__)
    rows = await session.execute(
        select(table.c.id).where(
            table.c.id.in_(attachment_ids),
            table.c.message_id.is_(None),
            table.c.state == AttachmentState.ready,
        )
    )
    return {int(row.id) for row in rows}


async def link_many(
    session: AsyncSession, links: Sequence[tuple[int, int, str]], *, now: datetime
) -> None:
    """Link uploads to new messages in one statement: ``(attachment, message, actor)``."""
    if not links:
        return
    table = cast(Table, Attachment.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(message_id=bindparam("b_message"), updated_at=now, updated_by=bindparam("b_by")),
        [{"b_id": a, "b_message": m, "b_by": by} for a, m, by in links],
    )


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
