"""The console's backups: ``/api/v1/admin/backups`` (admins only).

Lists backups and the last drill, and starts a backup or a drill. Nothing here reads or
returns key material: restores are an operator's job on the command line.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from cmschat.api.deps import AdminUser, Context, SessionDep
from cmschat.api.errors import ADMIN_ERRORS, responses
from cmschat.backup import service
from cmschat.backup.child import backup_in_child, drill_in_child
from cmschat.backup.drill import last_drill
from cmschat.backup.schemas import BackupRead, BackupsRead, DrillRead, StartBackup
from cmschat.context import AppContext
from cmschat.errors import Conflict

router = APIRouter(prefix="/admin/backups", tags=["admin"])
# One backup or drill at a time per instance: a second click waits for nothing.
_busy = asyncio.Lock()


def _toolkit(context: AppContext) -> service.Toolkit:
    settings = context.settings
    return service.Toolkit(
        settings=settings,
        target=service.target_for(settings),
        engine=service.engine_for(settings),
        storage=context.storage,
        clock=context.clock,
    )


@router.get("", response_model=BackupsRead, responses=responses(*ADMIN_ERRORS))
async def get_backups(admin: AdminUser, context: Context) -> BackupsRead:
    """Backups, newest first, the last drill, and the schedule."""
    kit = _toolkit(context)
    settings = context.settings.backup
    return BackupsRead(
        items=[
            BackupRead.model_validate(item.as_json())
            for item in await service.list_backups(kit=kit)
        ],
        last_drill=await last_drill(kit=kit),
        target=kit.target.where,
        keep_days=settings.keep_days,
        schedule={
            "enabled": settings.schedule,
            "full_at": settings.full_at.strftime("%H:%M"),
            "drill_weekday": settings.drill_weekday,
            "drill_at": settings.drill_at.strftime("%H:%M"),
            "timezone": settings.timezone,
        },
        rto_target_seconds=settings.rto_target_seconds,
        rpo_target_seconds=settings.rpo_target_seconds,
    )


@router.post(
    "",
    status_code=201,
    response_model=BackupRead,
    responses=responses(400, 404, 409, *ADMIN_ERRORS),
)
async def start_backup(
    body: StartBackup, admin: AdminUser, session: SessionDep, context: Context
) -> BackupRead:
    """Make a backup now, in a low-priority child process the request waits on."""
    if _busy.locked():
        raise Conflict("a backup or drill is already running on this instance")
    async with _busy:
        manifest, _ = await backup_in_child(
            kit=_toolkit(context), db=context.db, kind=body.kind, session=session
        )
    return BackupRead.model_validate(service.Listed(manifest.id, manifest).as_json())


@router.post(
    "/drill",
    status_code=201,
    response_model=DrillRead,
    responses=responses(400, 404, 409, *ADMIN_ERRORS),
)
async def start_drill(admin: AdminUser, session: SessionDep, context: Context) -> DrillRead:
    """Run a restore drill of the newest backup now."""
    if _busy.locked():
        raise Conflict("a backup or drill is already running on this instance")
    async with _busy:
        report = await drill_in_child(kit=_toolkit(context), db=context.db, session=session)
    return DrillRead.model_validate(report.as_json())
