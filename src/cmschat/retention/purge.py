"""The purge: removing expired messages and files for good, in short batches.

Each batch is one transaction that re-reads the room's policy (a legal hold placed
mid-run stops the purge at the next batch), deletes up to ``batch_size`` messages with
their mentions, search entries and room events, marks their files and expired files
for erasure, moves the room's ``purged_through_seq`` and adds to the room's progress
row. The files' bytes are erased once the batch commits (the attachment clean-up job
finishes any erasure a crash interrupted). When a room is done, one ``retention.purged``
audit event records its counts, including those of an interrupted earlier run.

Then the other expiries run, each owned by its domain and batched the same way: audit
events past their own retention (``audit.expiry``), expired sign-in sessions and old
sign-in attempts (``accounts.expiry``). This module orchestrates: the order, the
transactions of the room batches, the report and its audit event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts import expiry as account_expiry
from cmschat.attachments import erasure
from cmschat.attachments import expiry as file_expiry
from cmschat.attachments.models import Attachment
from cmschat.audit import expiry as audit_expiry
from cmschat.audit import service as audit
from cmschat.chat import expiry as message_expiry
from cmschat.clock import Clock
from cmschat.db.actors import SYSTEM_RETENTION
from cmschat.db.session import Database
from cmschat.observability import outages
from cmschat.retention import policies, progress
from cmschat.retention.models import RetentionProgress, RoomRetention
from cmschat.settings import RetentionSettings

log = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 3
"""Runs of one batch that InnoDB may end as a deadlock's victim before the purge fails."""

KeepGoing = Callable[[], Awaitable[bool]]
"""Asked between batches whether to go on (the leader renews its lease there)."""


@dataclass
class Report:
    """What a run removed (or, dry, would remove)."""

    started_at: datetime
    dry_run: bool
    rooms: list[policies.RoomLoss] = field(default_factory=list)
    audit_events_expired: int = 0
    sessions_removed: int = 0
    """Sign-in sessions past their absolute expiry."""
    login_attempts_removed: int = 0
    """Sign-in attempts older than ``login_attempt_days``."""
    stopped_early: bool = False
    """The lease was lost midway; the next run goes on from there."""

    @property
    def totals(self) -> tuple[int, int, int]:
        """Messages, files and bytes, all rooms together."""
        return (
            sum(r.messages for r in self.rooms),
            sum(r.attachments for r in self.rooms),
            sum(r.bytes for r in self.rooms),
        )


async def run_purge(
    db: Database,
    *,
    clock: Clock,
    settings: RetentionSettings,
    eraser: erasure.Eraser,
    dry_run: bool = False,
    keep_going: KeepGoing | None = None,
) -> Report:
    """Purge every room past its retention, then expire old audit events."""
    now = clock.now()
    report = Report(started_at=now, dry_run=dry_run)
    async with db.unit_of_work(SYSTEM_RETENTION) as session:
        plan = await policies.effective_policies(session, settings=settings)
        if dry_run:
            report.rooms = await policies.preview(session, policies=plan, now=now)
            return report
        await progress.mark_interrupted(session)
        unfinished = set((await session.scalars(select(RetentionProgress.room_id))).all())
    for policy in plan:
        message_cutoff, file_cutoff = policy.cutoffs(now)
        if message_cutoff is None and file_cutoff is None and policy.room_id not in unfinished:
            if policy.legal_hold:  # reported, so the operator sees what the hold kept
                report.rooms.append(policies.RoomLoss(policy.room_id, policy.room_name, True))
            continue
        loss = await _purge_room(
            db, policy, message_cutoff, file_cutoff, settings, eraser, keep_going
        )
        if loss is None:
            report.stopped_early = True
            return report
        if loss.legal_hold or loss.messages or loss.attachments:
            report.rooms.append(loss)
    report.audit_events_expired = await audit_expiry.expire_events(
        db=db, cutoff=now - timedelta(days=settings.audit_days), actor=SYSTEM_RETENTION
    )
    report.sessions_removed = await account_expiry.remove_expired_sessions(
        db=db, now=now, batch=settings.batch_size, actor=SYSTEM_RETENTION
    )
    report.login_attempts_removed = await account_expiry.remove_login_attempts(
        db=db,
        before=now - timedelta(days=settings.login_attempt_days),
        batch=settings.batch_size,
        actor=SYSTEM_RETENTION,
    )
    async with db.unit_of_work(SYSTEM_RETENTION) as session:
        messages, files, size = report.totals
        audit.record(
            session,
            action="retention.run",
            target_type="retention",
            changes={
                "rooms": len(report.rooms),
                "messages": messages,
                "attachments": files,
                "bytes": size,
                "audit_events_expired": report.audit_events_expired,
                "sessions_removed": report.sessions_removed,
                "login_attempts_removed": report.login_attempts_removed,
            },
        )
    return report


async def _purge_room(
    db: Database,
    policy: policies.Effective,
    message_cutoff: datetime | None,
    file_cutoff: datetime | None,
    settings: RetentionSettings,
    eraser: erasure.Eraser,
    keep_going: KeepGoing | None,
) -> policies.RoomLoss | None:
    """Purge one room batch by batch; None if told to stop midway."""
    held = policy.legal_hold
    first = True
    while not held:
        if not first:
            # A breather between batches: on SQLite, writers waiting for the one write
            # lock poll for it and would rarely catch a gap between back-to-back batches.
            await asyncio.sleep(settings.batch_pause_ms / 1000)
        first = False
        if keep_going is not None and not await keep_going():
            return None
        removed = await _batch_retried(
            db, policy.room_id, message_cutoff, file_cutoff, settings, eraser
        )
        held = removed is None
        if removed is not None and removed < settings.batch_size:
            break
    async with db.unit_of_work(SYSTEM_RETENTION) as session:
        return await progress.finish_room(session, policy, message_cutoff, file_cutoff, held=held)


async def _batch_retried(
    db: Database,
    room_id: int,
    message_cutoff: datetime | None,
    file_cutoff: datetime | None,
    settings: RetentionSettings,
    eraser: erasure.Eraser,
) -> int | None:
    """One batch, run again whole if InnoDB ended it as a deadlock's victim; how many rows
    it removed, None if the room is on hold. An edit of a message the batch removes takes
    the message's row, then the room's; the batch takes them the other way round
    (``chat.expiry``), so the two can collide: the edit is refused (503, try again), and the
    purge, which nobody waits for, tries again itself rather than failing the run."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            async with db.unit_of_work(SYSTEM_RETENTION) as session:
                if await _on_hold(session, room_id):
                    return None
                return await purge_batch(
                    session,
                    room_id=room_id,
                    message_cutoff=message_cutoff,
                    file_cutoff=file_cutoff,
                    batch_size=settings.batch_size,
                    eraser=eraser,
                )
        except Exception as error:
            if attempt == CONFLICT_ATTEMPTS or not outages.is_conflict(error):
                raise
            log.info(
                "retention: a batch of room %d collided with another transaction; again (%d)",
                room_id,
                attempt,
                extra={"event.action": "retention.batch_retried"},
            )
            await asyncio.sleep(settings.batch_pause_ms / 1000 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _on_hold(session: AsyncSession, room_id: int) -> bool:
    # Locked: an admin placing a hold waits for this batch, and no batch starts after it.
    row = await session.get(RoomRetention, room_id, with_for_update=True)
    return row is not None and row.legal_hold


async def purge_batch(
    session: AsyncSession,
    *,
    room_id: int,
    message_cutoff: datetime | None,
    file_cutoff: datetime | None,
    batch_size: int,
    eraser: erasure.Eraser,
) -> int:
    """Remove up to ``batch_size`` expired messages and files of a room; how many rows."""
    message_ids: list[int] = []
    last_seq = 0
    if message_cutoff is not None:
        message_ids, last_seq = await message_expiry.expired_messages(
            session, room_id=room_id, before=message_cutoff, limit=batch_size
        )
    # Every file of the purged messages goes with them (however many there are); files
    # past their own retention go in batches.
    files: dict[int, Attachment] = {}
    linked = await file_expiry.files_of_messages(session, message_ids=message_ids)
    files.update((f.id, f) for f in linked)
    aged: Sequence[Attachment] = []
    if file_cutoff is not None:
        aged = await file_expiry.expired_files(
            session, room_id=room_id, before=file_cutoff, limit=batch_size
        )
        files.update((f.id, f) for f in aged)
    if not message_ids and not files:
        return 0
    size = sum(f.size for f in files.values())
    await erasure.mark_for_erasure(session, eraser=eraser, attachment_ids=list(files))
    if message_ids:
        await message_expiry.delete_messages(
            session, room_id=room_id, message_ids=message_ids, through_seq=last_seq
        )
    await progress.add(session, room_id, len(message_ids), len(files), size)
    return max(len(message_ids), len(aged))
