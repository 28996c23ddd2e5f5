"""The console's retention policies: ``/api/v1/admin/retention`` (admins only)."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Response

from cmschat.api.deps import AdminUser, Context, ResourceId, SessionDep
from cmschat.api.errors import ADMIN_BODY_ERRORS, ADMIN_ERRORS, responses
from cmschat.audit import service as audit
from cmschat.chat.models import Room
from cmschat.errors import NotFound
from cmschat.jobs.lease import last_completed
from cmschat.retention import policies
from cmschat.retention.job import RETENTION_JOB
from cmschat.retention.schemas import (
    DefaultsRead,
    DefaultsWrite,
    PreviewRead,
    PreviewRequest,
    RetentionRead,
    RoomLossRead,
    RoomPolicyRead,
    RoomPolicyWrite,
    ScheduleRead,
)

router = APIRouter(prefix="/admin/retention", tags=["admin"])


def _defaults_read(defaults: policies.Defaults) -> DefaultsRead:
    return DefaultsRead(
        message_days=defaults.message_days,
        attachment_days=defaults.attachment_days,
        source="console" if defaults.from_console else "settings",
    )


def _override_of(body: RoomPolicyWrite) -> policies.Override:
    fields = body.model_fields_set
    return policies.Override(
        message_days=body.message_days if "message_days" in fields else policies.UNSET,
        attachment_days=body.attachment_days if "attachment_days" in fields else policies.UNSET,
        legal_hold=body.legal_hold,
        legal_hold_reason=body.legal_hold_reason,
    )


def _shown(value: int | policies.Unset | None) -> int | str | None:
    return "inherit" if isinstance(value, policies.Unset) else value


def _room_policy_read(
    room: Room, defaults: policies.Defaults, override: policies.Override
) -> RoomPolicyRead:
    applied = policies.effective(room, defaults, override)
    return RoomPolicyRead(
        room_id=room.id,
        room_name=room.name,
        message_days=_shown(override.message_days),
        attachment_days=_shown(override.attachment_days),
        legal_hold=override.legal_hold,
        legal_hold_reason=override.legal_hold_reason,
        effective_message_days=applied.message_days,
        effective_attachment_days=applied.attachment_days,
    )


@router.get("", response_model=RetentionRead, responses=responses(*ADMIN_ERRORS))
async def get_retention(admin: AdminUser, session: SessionDep, context: Context) -> RetentionRead:
    """The global policy, every room's own policy, and the purge schedule."""
    settings = context.settings.retention
    defaults = await policies.get_defaults(session, settings=settings)
    overrides = await policies.room_overrides(session)
    rooms = []
    for room_id, override in sorted(overrides.items()):
        room = await session.get(Room, room_id)
        assert room is not None  # noqa: S101 - foreign key
        rooms.append(_room_policy_read(room, defaults, override))
    return RetentionRead(
        defaults=_defaults_read(defaults),
        rooms=rooms,
        schedule=ScheduleRead(
            run_daily=settings.run_daily,
            run_at=settings.run_at.strftime("%H:%M"),
            last_completed_at=await last_completed(session, name=RETENTION_JOB),
            audit_days=settings.audit_days,
        ),
    )


@router.put("/defaults", response_model=DefaultsRead, responses=responses(*ADMIN_BODY_ERRORS))
async def put_defaults(
    body: DefaultsWrite, admin: AdminUser, session: SessionDep, context: Context
) -> DefaultsRead:
    """Set the global policy (preview it first with POST /preview)."""
    defaults = await policies.set_defaults(
        session,
        message_days=body.message_days,
        attachment_days=body.attachment_days,
        settings=context.settings.retention,
    )
    return _defaults_read(defaults)


@router.put(
    "/rooms/{room_id}", response_model=RoomPolicyRead, responses=responses(*ADMIN_BODY_ERRORS, 404)
)
async def put_room_policy(
    room_id: ResourceId,
    body: RoomPolicyWrite,
    admin: AdminUser,
    session: SessionDep,
    context: Context,
) -> RoomPolicyRead:
    """Give a room its own policy or a legal hold (replaces any it had)."""
    override = await policies.set_room_override(
        session, room_id=room_id, override=_override_of(body)
    )
    room = await session.get(Room, room_id)
    assert room is not None  # noqa: S101 - checked by the service
    defaults = await policies.get_defaults(session, settings=context.settings.retention)
    return _room_policy_read(room, defaults, override)


@router.delete(
    "/rooms/{room_id}",
    status_code=204,
    response_class=Response,
    responses=responses(*ADMIN_ERRORS, 404),
)
async def delete_room_policy(
    room_id: ResourceId, admin: AdminUser, session: SessionDep
) -> Response:
    """Make a room follow the global policy again (this also lifts a legal hold)."""
    await policies.clear_room_override(session, room_id=room_id)
    return Response(status_code=204)


def _preview_read(losses: list[policies.RoomLoss], context: Context) -> PreviewRead:
    return PreviewRead(
        generated_at=context.clock.now(),
        rooms=[RoomLossRead.model_validate(loss, from_attributes=True) for loss in losses],
        messages=sum(loss.messages for loss in losses),
        attachments=sum(loss.attachments for loss in losses),
        bytes=sum(loss.bytes for loss in losses),
    )


@router.get("/preview", response_model=PreviewRead, responses=responses(*ADMIN_ERRORS))
async def preview_current(admin: AdminUser, session: SessionDep, context: Context) -> PreviewRead:
    """What a purge run now would remove under the saved policies."""
    plan = await policies.effective_policies(session, settings=context.settings.retention)
    losses = await policies.preview(session, policies=plan, now=context.clock.now())
    return _preview_read(losses, context)


@router.post("/preview", response_model=PreviewRead, responses=responses(*ADMIN_BODY_ERRORS, 404))
async def preview_changes(
    body: PreviewRequest, admin: AdminUser, session: SessionDep, context: Context
) -> PreviewRead:
    """What a purge would remove if these policy changes were saved; nothing is saved."""
    settings = context.settings.retention
    defaults = await policies.get_defaults(session, settings=settings)
    if body.defaults is not None:
        fields = body.defaults.model_fields_set
        defaults = replace(
            defaults,
            message_days=(
                body.defaults.message_days if "message_days" in fields else defaults.message_days
            ),
            attachment_days=(
                body.defaults.attachment_days
                if "attachment_days" in fields
                else defaults.attachment_days
            ),
        )
    overrides = {}
    for proposal in body.rooms:
        if await session.get(Room, proposal.room_id) is None:
            raise NotFound(f"no room {proposal.room_id}")
        overrides[proposal.room_id] = _override_of(proposal)
    plan = await policies.effective_policies(
        session, settings=settings, defaults=defaults, overrides=overrides
    )
    losses = await policies.preview(session, policies=plan, now=context.clock.now())
    audit.record(
        session,
        action="retention.previewed",
        target_type="retention",
        changes={
            "proposal": body.model_dump(mode="json", exclude_unset=True),
            "messages": sum(x.messages for x in losses),
        },
    )
    return _preview_read(losses, context)
