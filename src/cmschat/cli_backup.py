"""``cmschat backup …``: encrypted backups, verify, restore, prune and restore drills."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from cmschat.attachments.storage.base import in_thread
from cmschat.cli_support import fail, open_database, operator_errors, require_database, run
from cmschat.clock import SystemClock
from cmschat.db.session import Database
from cmschat.errors import CmschatError
from cmschat.settings import Settings, load_settings

if TYPE_CHECKING:
    from cmschat.backup import service
    from cmschat.backup.drill import DrillReport
    from cmschat.backup.restore import Restored

# The backup modules are imported by the commands that use them: they bring Alembic and
# boto3 (~0.4 s), which every other CLI command would pay at start for nothing.

backup_app = typer.Typer(
    help="Encrypted backups, restores and restore drills.", no_args_is_help=True
)
T = TypeVar("T")


def _toolkit(settings: Settings) -> service.Toolkit:
    from cmschat.attachments.storage import storage_for
    from cmschat.backup import service

    return service.Toolkit(
        settings=settings,
        target=service.target_for(settings),
        engine=service.engine_for(settings),
        storage=storage_for(settings),
        clock=SystemClock(),
    )


@asynccontextmanager
async def _live(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, which must exist (backups never create an empty one)."""
    from cmschat.backup import service

    if not await in_thread(service.engine_for(settings).exists):
        raise CmschatError("there is no cmschat database to back up (run cmschat migrate?)")
    async with open_database(settings) as db:
        yield db


def _with_db(
    step: Callable[[service.Toolkit, Database], Awaitable[T]], *, writes_backup: bool = False
) -> T:
    settings = load_settings()
    if writes_backup:
        from cmschat.backup.keys import require_recipients

        require_recipients(settings)
    # Before the toolkit, whose file store would create its directory: refuse creating nothing.
    require_database(settings)
    kit = _toolkit(settings)

    async def go() -> T:
        async with _live(settings) as db:
            return await step(kit, db)

    return run(go())


@backup_app.command("run")
@operator_errors
def backup_run(
    kind: Annotated[str, typer.Option(help="full, or incremental (MariaDB binary logs)")] = "full",
) -> None:
    """Make an encrypted backup of the database and the files into the backup target."""
    from cmschat.backup import service
    from cmschat.backup.physical import PhysicalEngine

    settings = load_settings()
    if kind == "full" and not settings.is_sqlite:
        engine = service.engine_for(settings)
        if isinstance(engine, PhysicalEngine):
            engine.check_host()  # before connecting: a remote host gets the real reason

    async def backup(kit: service.Toolkit, db: Database) -> service.Made:
        made = await service.make_backup(kit=kit, db=db, kind=kind)
        await service.announce(db=db, made=made, session=None)
        return made

    made = _with_db(backup, writes_backup=True)
    manifest, recipients = made.manifest, made.recipients
    if made.changes.get("note"):
        typer.echo(f"cmschat: {made.changes['note']}")  # an incremental became a full backup
    if recipients.generated is not None:
        typer.echo(
            f"cmschat: WARNING: generated the backup key {recipients.generated}. COPY IT "
            "SOMEWHERE SAFE, away from this machine: without it no backup can be restored.",
            err=True,
        )
    typer.echo(
        f"cmschat: backup {manifest.id} written: {manifest.size} bytes, "
        f"{len(manifest.files)} files, {manifest.duration_seconds:.1f} s"
    )


@backup_app.command("list")
@operator_errors
def backup_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
) -> None:
    """List backups, newest first."""
    from cmschat.backup import service

    kit = _toolkit(load_settings())
    backups = run(service.list_backups(kit=kit))
    if as_json:
        typer.echo(json.dumps([item.as_json() for item in backups], indent=2))
        return
    if not backups:
        typer.echo(f"cmschat: no backups in {kit.target.where}")
    for item in backups:
        row = item.as_json()
        typer.echo(
            f"{row['id']}  {row['status']}  {row['size'] or '-'} bytes  {row['created_at'] or '-'}"
        )


@backup_app.command("verify")
@operator_errors
def backup_verify(backup_id: Annotated[str, typer.Argument(help="a backup id")]) -> None:
    """Decrypt a backup and check every checksum, restoring nothing."""
    from cmschat.backup.restore import verify_backup

    kit = _toolkit(load_settings())
    manifest = run(verify_backup(kit=kit, backup_id=backup_id))
    typer.echo(f"cmschat: backup {manifest.id} is intact ({len(manifest.artifacts)} artifacts)")


@backup_app.command("restore")
@operator_errors
def backup_restore(
    backup_id: Annotated[str, typer.Argument(help="a backup id")],
    force: Annotated[
        bool, typer.Option("--force", help="replace a database that is not empty")
    ] = False,
    until: Annotated[
        str | None,
        typer.Option(
            help="replay an incremental chain up to this moment (ISO 8601; UTC if no offset)"
        ),
    ] = None,
) -> None:
    """Restore a backup into the configured database and file store (stop cmschat first)."""
    from cmschat.backup.restore import restore_backup

    kit = _toolkit(load_settings())
    moment = _moment(until) if until is not None else None
    restored: Restored = run(
        restore_backup(kit=kit, backup_id=backup_id, force=force, until=moment)
    )
    if restored.steps:
        typer.echo(
            f"cmschat: prepared physical backup {restored.manifest.id} ({restored.files} files "
            "restored); finish as root on the database host, in this order:"
        )
        for number, step in enumerate(restored.steps, 1):
            typer.echo(f"  {number}. {step}")
        return
    typer.echo(
        f"cmschat: restored backup {restored.manifest.id} ({restored.files} files) "
        f"in {restored.seconds:.1f} s"
    )


@backup_app.command("finish-restore")
@operator_errors
def backup_finish_restore(
    directory: Annotated[Path, typer.Argument(help="the directory `backup restore` prepared")],
) -> None:
    """After the copy-back of a physical backup: replay its logs, migrate, audit the restore."""
    from cmschat.backup.physical_backup import finish_restore

    kit = _toolkit(load_settings())
    changes = run(finish_restore(kit=kit, directory=directory))
    reached = changes["reached"]
    typer.echo(
        f"cmschat: restored backup {reached['backup']} up to "
        f"{reached['until'] or reached['binlog']} and recorded it in the audit trail"
    )


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CmschatError(
            f"--until: {value!r} is not a time like 2026-03-01T14:30:00+09:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@backup_app.command("prune")
@operator_errors
def backup_prune() -> None:
    """Remove backups older than keep_days, never the newest full one or its chain."""
    from cmschat.backup import service

    removed = _with_db(lambda kit, db: service.prune(kit=kit, db=db))
    typer.echo(
        f"cmschat: removed {len(removed)} backups" + (f": {', '.join(removed)}" if removed else "")
    )


@backup_app.command("drill")
@operator_errors
def backup_drill(
    backup_id: Annotated[
        str | None, typer.Argument(help="a backup id (default: the newest)")
    ] = None,
) -> None:
    """Restore a backup into scratch space, check it, and report RTO and RPO."""
    from cmschat.backup.drill import run_drill

    report: DrillReport = _with_db(lambda kit, db: run_drill(kit=kit, db=db, backup_id=backup_id))
    for check in report.checks:
        typer.echo(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    if not report.ok:
        failed = ", ".join(check.name for check in report.checks if not check.ok)
        raise fail(f"drill of backup {report.backup_id} failed: {failed}")
    typer.echo(
        f"cmschat: drill of backup {report.backup_id} passed: RTO {report.rto_seconds:.1f} s, "
        f"RPO {report.rpo_seconds:.0f} s"
    )


@backup_app.command("child", hidden=True)
@operator_errors
def backup_child(
    job: Annotated[str, typer.Argument(help="backup or drill")],
    settings_file: Annotated[Path, typer.Option(help="the instance's settings (JSON)")],
    result_file: Annotated[Path, typer.Option(help="where the result goes (JSON)")],
    kind: Annotated[str, typer.Option(help="full or incremental")] = "full",
) -> None:
    """A serving instance's backup or drill, at low priority (started by the instance)."""
    from cmschat.backup.child import child_main

    settings = load_settings(**json.loads(settings_file.read_text()))
    run(child_main(job, kind, settings, result_file))
