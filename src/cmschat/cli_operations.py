"""Operations commands: ``cmschat audit …`` and ``cmschat retention …``."""

from __future__ import annotations

from typing import Annotated

import typer

from cmschat.attachments.erasure import Eraser
from cmschat.audit import chain
from cmschat.cli_support import fail, open_database, operator_errors, require_database, run
from cmschat.db.actors import SYSTEM_CLI
from cmschat.errors import CmschatError
from cmschat.jobs.scheduler import JobBusy
from cmschat.retention.job import RetentionJob
from cmschat.retention.purge import Report, run_purge
from cmschat.settings import Settings, load_settings

audit_app = typer.Typer(help="Check the audit trail.", no_args_is_help=True)
retention_app = typer.Typer(help="Purge what is past its retention.", no_args_is_help=True)


async def _verify_audit(settings: Settings, kept_head: tuple[int, str] | None) -> chain.Verdict:
    async with open_database(settings) as db, db.unit_of_work(SYSTEM_CLI) as session:
        verdict = await chain.verify(session)
        if verdict.ok and kept_head is not None:
            return await chain.check_kept_head(session, kept_head, verdict)
        return verdict


@audit_app.command("verify")
@operator_errors
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            help="a head kept elsewhere, as ID:HASH (from the log or a previous run): "
            "the chain must still contain it"
        ),
    ] = None,
) -> None:
    """Walk the audit trail's hash chain; exit 1 naming the first bad event."""
    kept = chain.parse_kept_head(expect_head) if expect_head is not None else None
    settings = load_settings()
    require_database(settings)
    verdict = run(_verify_audit(settings, kept))
    if not verdict.ok:
        raise fail(verdict.describe())
    typer.echo(f"cmschat: {verdict.describe()}")


async def _retention(settings: Settings, *, dry_run: bool) -> Report:
    from cmschat.attachments.storage import storage_for

    async with open_database(settings) as db:
        eraser = Eraser(db, storage_for(settings))
        if dry_run:
            return await run_purge(
                db, clock=db.clock, settings=settings.retention, eraser=eraser, dry_run=True
            )
        job = RetentionJob(db, clock=db.clock, settings=settings.retention, eraser=eraser)
        try:
            return await job.run_now()
        except JobBusy as exc:
            raise CmschatError(str(exc)) from None


@retention_app.command("run")
@operator_errors
def retention_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only report what would be removed")
    ] = False,
) -> None:
    """Purge messages and files past their retention period (and expire old audit events)."""
    settings = load_settings()
    require_database(settings)
    report = run(_retention(settings, dry_run=dry_run))
    verb = "would remove" if dry_run else "removed"
    for room in report.rooms:
        name = room.room_name or f"room {room.room_id}"
        if room.legal_hold:
            typer.echo(f"  {name} (#{room.room_id}): on legal hold, nothing removed")
            continue
        typer.echo(
            f"  {name} (#{room.room_id}): {room.messages} messages, "
            f"{room.attachments} files, {room.bytes} bytes"
        )
    messages, files, size = report.totals
    typer.echo(
        f"cmschat: {verb} {messages} messages and {files} files ({size} bytes) "
        f"in {sum(1 for r in report.rooms if not r.legal_hold)} rooms"
        + ("" if dry_run else f"; {report.audit_events_expired} audit events expired")
    )
