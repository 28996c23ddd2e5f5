"""The end of an attachment's life: marked 'deleting', then erased for good.

Bytes leave storage *before* their row, so storage never holds bytes no row points at; a
crash in between leaves a 'deleting' row that the clean-up job erases later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.attachments.storage import Storage
from cmschat.audit import service as audit
from cmschat.clock import Clock
from cmschat.db.actors import SYSTEM_ERASER
from cmschat.db.session import Database, after_commit

log = logging.getLogger(__name__)


class Eraser:
    """Removes attachments for good: bytes from storage first, then the rows."""

    def __init__(self, db: Database, storage: Storage) -> None:
        self.db = db
        self.storage = storage

    async def erase(self, attachment_ids: Sequence[int]) -> int:
        """Erase these attachments (in state 'deleting'); returns how many are gone."""
        async with self.db.unit_of_work(SYSTEM_ERASER) as session:
            rows = (
                await session.scalars(
                    select(Attachment).where(
                        Attachment.id.in_(attachment_ids),
                        Attachment.state == AttachmentState.deleting,
                    )
                )
            ).all()
            keys = {row.id: row.storage_key for row in rows}
        gone = []
        for attachment_id, key in keys.items():
            try:
                await self.storage.delete(key)
                gone.append(attachment_id)
            except Exception:
                log.warning(
                    "could not delete attachment bytes; the clean-up job retries", exc_info=True
                )
        if gone:
            async with self.db.unit_of_work(SYSTEM_ERASER) as session:
                await session.execute(delete(Attachment).where(Attachment.id.in_(gone)))
        return len(gone)


async def remove_for_messages(
    session: AsyncSession, *, eraser: Eraser, message_ids: Sequence[int]
) -> int:
    """Mark the messages' files for deletion; they are erased once this transaction commits."""
    if not message_ids:
        return 0
    ids = (
        await session.scalars(
            select(Attachment.id).where(
                Attachment.message_id.in_(message_ids), Attachment.state != AttachmentState.deleting
            )
        )
    ).all()
    return await mark_for_erasure(session, eraser=eraser, attachment_ids=ids)


async def mark_for_erasure(
    session: AsyncSession, *, eraser: Eraser, attachment_ids: Sequence[int]
) -> int:
    """Mark files 'deleting': they vanish from views now, and are erased after the commit.

    A crash between the commit and the erasure leaves them marked; the clean-up job
    finishes the erasure.
    """
    if not attachment_ids:
        return 0
    ids = list(attachment_ids)
    await session.execute(
        update(Attachment)
        .where(Attachment.id.in_(ids))
        .values(state=AttachmentState.deleting)
        .execution_options(synchronize_session="fetch")
    )

    async def erase() -> None:
        await eraser.erase(ids)

    after_commit(session, erase)
    return len(ids)


async def clean_up(
    *, eraser: Eraser, clock: Clock, unlinked_after: timedelta, batch: int = 200
) -> int:
    """Erase uploads never linked to a message, interrupted uploads and unfinished deletions.

    Safe to run on several instances at once and to rerun after a crash.
    """
    cutoff = clock.now() - unlinked_after
    erased = 0
    while True:
        async with eraser.db.unit_of_work(SYSTEM_ERASER) as session:
            rows = (
                await session.scalars(
                    select(Attachment)
                    .where(
                        (Attachment.state == AttachmentState.deleting)
                        | (Attachment.message_id.is_(None) & (Attachment.created_at < cutoff))
                    )
                    .order_by(Attachment.id)
                    .limit(batch)
                )
            ).all()
            for row in rows:
                row.state = AttachmentState.deleting
            ids = [row.id for row in rows]
            if ids:
                audit.record(
                    session,
                    action="attachment.cleanup",
                    target_type="attachment",
                    changes={"attachment_ids": ids},
                )
        if not ids:
            return erased
        done = await eraser.erase(ids)
        erased += done
        if done < len(ids):  # storage is failing: stop, the next run retries
            return erased
