"""Retention policies: the global default, per-room overrides, legal holds, and what each
room would lose under them right now (the preview, also of changes not yet saved)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.audit import service as audit
from cmschat.chat.models import Message, Room
from cmschat.errors import NotFound
from cmschat.retention.models import DEFAULTS_ID, RetentionDefaults, RoomRetention
from cmschat.settings import RetentionSettings


@dataclass(frozen=True)
class Defaults:
    """The global policy (None: keep forever)."""

    message_days: int | None
    attachment_days: int | None
    from_console: bool
    """False while the settings' values apply because no admin has set any."""


@dataclass(frozen=True)
class Override:
    """A room's own policy; ``UNSET`` fields follow the defaults."""

    message_days: int | Unset | None
    attachment_days: int | Unset | None
    legal_hold: bool = False
    legal_hold_reason: str | None = None


class Unset:
    """The marker of a field a room does not override."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class Effective:
    """What applies to one room."""

    room_id: int
    room_name: str | None
    message_days: int | None
    attachment_days: int | None
    legal_hold: bool

    def cutoffs(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """Messages and files created before these times have expired (None: none have)."""
        if self.legal_hold:
            return None, None
        return (
            now - timedelta(days=self.message_days) if self.message_days else None,
            now - timedelta(days=self.attachment_days) if self.attachment_days else None,
        )


async def get_defaults(session: AsyncSession, *, settings: RetentionSettings) -> Defaults:
    """The global policy: the console's, or the settings' until an admin sets one."""
    row = await session.get(RetentionDefaults, DEFAULTS_ID)
    if row is None:
        return Defaults(settings.message_days, settings.attachment_days, from_console=False)
    return Defaults(row.message_days, row.attachment_days, from_console=True)


async def set_defaults(
    session: AsyncSession,
    *,
    message_days: int | None,
    attachment_days: int | None,
    settings: RetentionSettings,
) -> Defaults:
    """Replace the global policy (audited)."""
    before = await get_defaults(session, settings=settings)
    row = await session.get(RetentionDefaults, DEFAULTS_ID)
    if row is None:
        row = RetentionDefaults(id=DEFAULTS_ID)
        session.add(row)
    row.message_days, row.attachment_days = message_days, attachment_days
    await session.flush()
    audit.record(
        session,
        action="retention.defaults_changed",
        target_type="retention",
        target_id="defaults",
        changes={
            "message_days": [before.message_days, message_days],
            "attachment_days": [before.attachment_days, attachment_days],
        },
    )
    return Defaults(message_days, attachment_days, from_console=True)


def _override_of(row: RoomRetention | None) -> Override | None:
    if row is None:
        return None
    return Override(
        message_days=row.message_days if row.message_override else UNSET,
        attachment_days=row.attachment_days if row.attachment_override else UNSET,
        legal_hold=row.legal_hold,
        legal_hold_reason=row.legal_hold_reason,
    )


def _describe(override: Override | None) -> dict[str, object]:
    if override is None:
        return {}
    return {
        "message_days": "inherit" if override.message_days is UNSET else override.message_days,
        "attachment_days": (
            "inherit" if override.attachment_days is UNSET else override.attachment_days
        ),
        "legal_hold": override.legal_hold,
    }


async def room_overrides(session: AsyncSession) -> dict[int, Override]:
    """Every room's override, by room id."""
    rows = (await session.scalars(select(RoomRetention))).all()
    return {row.room_id: o for row in rows if (o := _override_of(row)) is not None}


async def set_room_override(session: AsyncSession, *, room_id: int, override: Override) -> Override:
    """Replace a room's override (audited); a legal hold takes effect for the next batch."""
    if await session.get(Room, room_id) is None:
        raise NotFound("no such room")
    row = await session.get(RoomRetention, room_id, with_for_update=True)
    before = _override_of(row)
    if row is None:
        row = RoomRetention(room_id=room_id)
        session.add(row)
    row.message_override = override.message_days is not UNSET
    row.message_days = None if isinstance(override.message_days, Unset) else override.message_days
    row.attachment_override = override.attachment_days is not UNSET
    row.attachment_days = (
        None if isinstance(override.attachment_days, Unset) else override.attachment_days
    )
    row.legal_hold, row.legal_hold_reason = override.legal_hold, override.legal_hold_reason
    await session.flush()
    _record_room_change(session, room_id, before, override)
    return override


async def clear_room_override(session: AsyncSession, *, room_id: int) -> None:
    """Make a room follow the defaults again (audited); NotFound if it had no override."""
    row = await session.get(RoomRetention, room_id, with_for_update=True)
    if row is None:
        raise NotFound("this room has no retention override")
    before = _override_of(row)
    await session.delete(row)
    await session.flush()
    _record_room_change(session, room_id, before, None)


def _record_room_change(
    session: AsyncSession, room_id: int, before: Override | None, after: Override | None
) -> None:
    was_held = before is not None and before.legal_hold
    held = after is not None and after.legal_hold
    action = "retention.room_policy_changed"
    if held != was_held:
        action = "retention.legal_hold_placed" if held else "retention.legal_hold_lifted"
    changes: dict[str, object] = {"before": _describe(before), "after": _describe(after)}
    if held and after is not None and after.legal_hold_reason:
        changes["reason"] = after.legal_hold_reason
    audit.record(session, action=action, target_type="room", target_id=room_id, changes=changes)


def effective(room: Room, defaults: Defaults, override: Override | None) -> Effective:
    """The policy that applies to a room."""
    message_days, attachment_days = defaults.message_days, defaults.attachment_days
    if override is not None:
        if not isinstance(override.message_days, Unset):
            message_days = override.message_days
        if not isinstance(override.attachment_days, Unset):
            attachment_days = override.attachment_days
    return Effective(
        room_id=room.id,
        room_name=room.name,
        message_days=message_days,
        attachment_days=attachment_days,
        legal_hold=override is not None and override.legal_hold,
    )


async def effective_policies(
    session: AsyncSession,
    *,
    settings: RetentionSettings,
    defaults: Defaults | None = None,
    overrides: dict[int, Override] | None = None,
) -> list[Effective]:
    """Every room's policy (or what it would be with other defaults or overrides)."""
    defaults = defaults or await get_defaults(session, settings=settings)
    stored = await room_overrides(session)
    if overrides:
        stored = {**stored, **overrides}
    rooms = (await session.scalars(select(Room).order_by(Room.id))).all()
    return [effective(room, defaults, stored.get(room.id)) for room in rooms]


@dataclass(frozen=True)
class RoomLoss:
    """What one room loses in a purge (or would, in a preview)."""

    room_id: int
    room_name: str | None
    legal_hold: bool
    message_cutoff: datetime | None = None
    attachment_cutoff: datetime | None = None
    messages: int = 0
    attachments: int = 0
    bytes: int = 0


def expired_files(
    room_id: int, message_cutoff: datetime | None, file_cutoff: datetime | None
) -> ColumnElement[bool]:
    """The condition on attachments a purge of this room removes."""
    conditions = []
    if file_cutoff is not None:
        conditions.append(Attachment.created_at < file_cutoff)
    if message_cutoff is not None:
        expired_messages = select(Message.id).where(
            Message.room_id == room_id, Message.created_at < message_cutoff
        )
        conditions.append(Attachment.message_id.in_(expired_messages))
    return (
        (Attachment.room_id == room_id)
        & (Attachment.state != AttachmentState.deleting)
        & or_(*conditions)
    )


async def preview(
    session: AsyncSession, *, policies: list[Effective], now: datetime
) -> list[RoomLoss]:
    """What each room would lose if a purge ran now; nothing is changed."""
    losses = []
    for policy in policies:
        message_cutoff, file_cutoff = policy.cutoffs(now)
        loss = RoomLoss(
            room_id=policy.room_id,
            room_name=policy.room_name,
            legal_hold=policy.legal_hold,
            message_cutoff=message_cutoff,
            attachment_cutoff=file_cutoff,
        )
        if message_cutoff is not None:
            count = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.room_id == policy.room_id, Message.created_at < message_cutoff)
            )
            loss = replace(loss, messages=int(count or 0))
        if message_cutoff is not None or file_cutoff is not None:
            files, size = (
                await session.execute(
                    select(func.count(), func.coalesce(func.sum(Attachment.size), 0)).where(
                        expired_files(policy.room_id, message_cutoff, file_cutoff)
                    )
                )
            ).one()
            loss = replace(loss, attachments=int(files), bytes=int(size))
        if loss.legal_hold or loss.messages or loss.attachments:
            losses.append(loss)
    return losses
