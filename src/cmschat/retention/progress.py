"""A room's purge progress across batches and runs, and its one audit event.

Each batch adds its counts to the room's progress row in its own transaction; when the room
is done, the row becomes one ``retention.purged`` audit event (an interrupted earlier run's
counts included) and is cleared.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.audit import service as audit
from cmschat.retention import policies
from cmschat.retention.models import RetentionProgress


async def add(session: AsyncSession, room_id: int, messages: int, files: int, size: int) -> None:
    """Add a batch's counts to the room's progress row."""
    row = await session.get(RetentionProgress, room_id)
    if row is None:
        session.add(
            RetentionProgress(
                room_id=room_id, messages=messages, attachments=files, bytes=size, runs=1
            )
        )
    else:
        row.messages += messages
        row.attachments += files
        row.bytes += size
    await session.flush()


async def finish_room(
    session: AsyncSession,
    policy: policies.Effective,
    message_cutoff: datetime | None,
    file_cutoff: datetime | None,
    *,
    held: bool,
) -> policies.RoomLoss:
    """Turn the room's progress into its one audit event, and clear it."""
    row = await session.get(RetentionProgress, policy.room_id)
    loss = policies.RoomLoss(
        room_id=policy.room_id,
        room_name=policy.room_name,
        legal_hold=held,
        message_cutoff=message_cutoff,
        attachment_cutoff=file_cutoff,
    )
    if row is None:
        return loss
    loss = replace(loss, messages=row.messages, attachments=row.attachments, bytes=row.bytes)
    audit.record(
        session,
        action="retention.purged",
        target_type="room",
        target_id=policy.room_id,
        changes={
            "messages": row.messages,
            "attachments": row.attachments,
            "bytes": row.bytes,
            "message_cutoff": message_cutoff,
            "attachment_cutoff": file_cutoff,
            "interrupted_runs": row.runs - 1,
            "stopped_by_legal_hold": held,
        },
    )
    await session.delete(row)
    return loss


async def mark_interrupted(session: AsyncSession) -> None:
    """Count a new run on the progress rows an interrupted run left."""
    await session.execute(
        update(RetentionProgress)
        .values(runs=RetentionProgress.runs + 1)
        .execution_options(synchronize_session=False)
    )
