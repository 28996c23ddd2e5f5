"""Backups as operations: run, list, verify, restore, prune.

Each step that touches the database or the store runs in a worker thread; the event loop
of a serving instance keeps answering while a backup runs. Backups are written to a
private staging directory, uploaded, and their manifest is stored last: a backup without
a manifest is incomplete and never restored.

Past 300 lines on purpose: these are the operations the CLI, the console and the schedule
share, one entry point each; the work itself lives in the modules beside it (engines,
targets, crypto, incremental, restore, drill).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

import cmschat
from cmschat.attachments.storage import Storage
from cmschat.attachments.storage.base import in_thread
from cmschat.audit import service as audit
from cmschat.backup import metrics
from cmschat.backup.engines import Engine, SqliteEngine, sqlite_path
from cmschat.backup.files import ARTIFACT as FILES_ARTIFACT
from cmschat.backup.files import archive_files
from cmschat.backup.keys import Recipients, resolve_recipients
from cmschat.backup.manifest import MANIFEST_NAME, Artifact, Manifest, check_id, new_id
from cmschat.backup.physical import ARTIFACT as PHYSICAL_ARTIFACT
from cmschat.backup.targets import Target, target_from_url
from cmschat.clock import Clock
from cmschat.db.actors import SYSTEM_BACKUP
from cmschat.db.session import Database
from cmschat.errors import Invalid, NotFound
from cmschat.settings import Settings

log = logging.getLogger(__name__)

DRILLS = "drills"


@dataclass
class Toolkit:
    """What backup operations work with, made from the settings."""

    settings: Settings
    target: Target
    engine: Engine
    storage: Storage
    clock: Clock


def engine_for(settings: Settings, database_url: str | None = None) -> Engine:
    """The engine for the configured (or the given) database."""
    url = database_url or settings.database_url
    if url.startswith("sqlite"):
        return SqliteEngine(sqlite_path(url))
    from cmschat.backup.mariadb import MariadbEngine

    if settings.backup.mariadb_method == "mariadb-backup":
        from cmschat.backup.physical import PhysicalEngine

        return PhysicalEngine(url)
    return MariadbEngine(url)


def target_for(settings: Settings) -> Target:
    """The backup target the settings name."""
    secret = settings.s3_secret_access_key
    return target_from_url(
        settings.backup.url,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key=settings.s3_access_key_id,
        s3_secret_key=secret.get_secret_value() if secret else None,
    )


@contextlib.contextmanager
def staging(settings: Settings) -> Iterator[Path]:
    """A private (0700) scratch directory in the data dir, removed afterwards."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".backup-", dir=settings.data_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def record(
    db: Database,
    *,
    action: str,
    target_id: str | None,
    changes: dict[str, object],
    session: AsyncSession | None = None,
) -> None:
    """One audit event for a backup operation, and the same as a JSON log line.

    ``session``: the caller's unit of work (a console request, audited as its admin);
    otherwise one of its own, as the system.
    """
    if session is not None:
        audit.record(
            session, action=action, target_type="backup", target_id=target_id, changes=changes
        )
    else:
        async with db.unit_of_work(SYSTEM_BACKUP) as own:
            audit.record(
                own, action=action, target_type="backup", target_id=target_id, changes=changes
            )
    log.info(
        "%s %s", action, target_id or "", extra={"event.action": action, "backup.id": target_id}
    )


@dataclass(frozen=True)
class Made:
    """A backup written and complete in the target, not yet counted nor audited."""

    manifest: Manifest
    recipients: Recipients
    changes: dict[str, object]
    """What its ``backup.run`` audit event records. A ``note`` there (an incremental
    that became a full backup, and why) is logged as a warning too."""


async def run_backup(
    *, kit: Toolkit, db: Database, kind: str, session: AsyncSession | None = None
) -> tuple[Manifest, Recipients]:
    """Make one encrypted backup into the target, count and audit it; its manifest.

    This runs in the calling process (``cmschat backup run``); a serving instance runs
    ``child.backup_in_child`` instead, which makes the backup in a low-priority process.
    """
    made = await make_backup(kit=kit, db=db, kind=kind)
    await announce(db=db, made=made, session=session)
    return made.manifest, made.recipients


async def announce(*, db: Database, made: Made, session: AsyncSession | None) -> None:
    """Count a complete backup in the metrics and audit it; log its note, if any."""
    metrics.backup_done(made.manifest)
    note = made.changes.get("note")
    if note:
        log.warning(
            "%s", note, extra={"event.action": "backup.new_chain", "backup.id": made.manifest.id}
        )
    await record(
        db, action="backup.run", target_id=made.manifest.id, changes=made.changes, session=session
    )


async def make_backup(*, kit: Toolkit, db: Database, kind: str) -> Made:
    """Write one encrypted backup into the target, its manifest last."""
    if kind == "incremental":
        if kit.engine.kind == "sqlite":
            raise Invalid(
                "incremental backups need MariaDB's binary log; on SQLite run full backups "
                "(cmschat backup run --kind full)"
            )
        from cmschat.backup.incremental import make_incremental

        return await make_incremental(kit=kit, db=db)
    if kind != "full":
        raise Invalid(f"kind must be full or incremental, not {kind!r}")
    return await make_full(kit=kit, db=db)


async def make_full(*, kit: Toolkit, db: Database) -> Made:
    """Write one encrypted full backup (a dump, a SQLite copy or a physical copy)."""
    kind = "full"
    recipients = await in_thread(resolve_recipients, kit.settings)
    started, clock_start = kit.clock.now(), time.monotonic()
    backup_id = new_id(started, kind)
    with staging(kit.settings) as scratch:
        if kit.engine.artifact == PHYSICAL_ARTIFACT:
            # The copy's facts come from a snapshot after it (physical_backup.py).
            from cmschat.backup.physical_backup import physical_copy

            sealed_all, facts = await physical_copy(kit.engine, db, scratch, recipients.keys)
        else:
            sealed, facts = await in_thread(kit.engine.snapshot, scratch, recipients.keys)
            sealed_all = [(kit.engine.artifact, sealed)]
        archived = await archive_files(
            kit.storage, facts.files, scratch / FILES_ARTIFACT, recipients.keys
        )
        for name in [*(name for name, _ in sealed_all), FILES_ARTIFACT]:
            await in_thread(kit.target.put_file, f"{backup_id}/{name}", scratch / name)
    manifest = Manifest(
        id=backup_id,
        kind=kind,
        created_at=started,
        cmschat_version=cmschat.__version__,
        database_kind=kit.engine.kind,
        alembic_revision=facts.alembic_revision,
        artifacts=[
            *(Artifact.of(name, sealed) for name, sealed in sealed_all),
            Artifact.of(FILES_ARTIFACT, archived.sealed),
        ],
        row_counts=facts.row_counts,
        audit_head=facts.audit_head,
        files=archived.files,
        binlog=facts.binlog,
        duration_seconds=round(time.monotonic() - clock_start, 3),
    )
    await complete(kit=kit, manifest=manifest)
    changes: dict[str, object] = {
        "kind": kind,
        "size": manifest.size,
        "files": len(archived.files),
        "files_missing": len(archived.missing),
        "duration_seconds": manifest.duration_seconds,
    }
    return Made(manifest, recipients, changes)


async def complete(*, kit: Toolkit, manifest: Manifest) -> None:
    """Mark a backup complete: its manifest is written last."""
    await in_thread(kit.target.put_text, f"{manifest.id}/{MANIFEST_NAME}", manifest.to_json())


@dataclass(frozen=True)
class Listed:
    """A backup as listed: complete (with its manifest) or not."""

    id: str
    manifest: Manifest | None

    @property
    def status(self) -> str:
        """complete, or incomplete (no manifest: failed or still running)."""
        return "complete" if self.manifest is not None else "incomplete"

    def as_json(self) -> dict[str, object]:
        """What ``backup list --json`` and the console show."""
        m = self.manifest
        return {
            "id": self.id,
            "kind": self.id.rsplit("-", 1)[1],
            "created_at": m.created_at.astimezone(UTC).isoformat() if m else None,
            "size": m.size if m else None,
            "status": self.status,
            "database_kind": m.database_kind if m else None,
            "files": len(m.files) if m else None,
        }


def _list(target: Target) -> list[Listed]:
    found = []
    for folder in target.folders():
        try:
            check_id(folder)
        except Invalid:
            continue
        text = target.get_text(f"{folder}/{MANIFEST_NAME}")
        found.append(Listed(folder, Manifest.from_json(text) if text is not None else None))
    return sorted(found, key=lambda item: item.id, reverse=True)


async def list_backups(*, kit: Toolkit) -> list[Listed]:
    """Every backup in the target, newest first."""
    return await in_thread(_list, kit.target)


async def load_manifest(*, kit: Toolkit, backup_id: str) -> Manifest:
    """The manifest of one complete backup; NotFound otherwise."""
    check_id(backup_id)
    text = await in_thread(kit.target.get_text, f"{backup_id}/{MANIFEST_NAME}")
    if text is None:
        raise NotFound(f"no complete backup {backup_id} in {kit.target.where}")
    return Manifest.from_json(text)


async def newest(*, kit: Toolkit, kind: str | None = None) -> Manifest:
    """The newest complete backup (of ``kind``); NotFound if there is none."""
    for item in await list_backups(kit=kit):
        if item.manifest is not None and kind in (None, item.manifest.kind):
            return item.manifest
    raise NotFound(f"there is no complete backup in {kit.target.where}")


async def fetch(*, kit: Toolkit, manifest: Manifest, into: Path) -> None:
    """Download every artifact of a backup into a local directory."""
    for artifact in manifest.artifacts:
        await in_thread(kit.target.get_file, f"{manifest.id}/{artifact.name}", into / artifact.name)


def chosen_for_prune(backups: list[Listed], *, now: datetime, keep_days: int) -> list[str]:
    """The ids prune removes: older than keep_days, except the newest full and its chain."""
    cutoff = now - timedelta(days=keep_days)
    complete = {item.id: item.manifest for item in backups if item.manifest is not None}
    keep = {i for i, m in complete.items() if m.created_at >= cutoff}
    fulls = sorted(i for i, m in complete.items() if m.kind == "full")
    if fulls:
        keep.add(fulls[-1])
        # Incrementals after the newest full need it and each other to be replayed.
        keep.update(i for i, m in complete.items() if m.kind == "incremental" and i > fulls[-1])
    for backup_id in list(keep):
        base = complete[backup_id].base_id
        while base is not None and base in complete and base not in keep:
            keep.add(base)
            base = complete[base].base_id
    drop = []
    for item in backups:
        created = datetime.strptime(item.id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if item.id not in keep and created < cutoff:
            drop.append(item.id)
    return drop


async def prune(*, kit: Toolkit, db: Database) -> list[str]:
    """Apply the keep policy; returns the removed ids."""
    backups = await list_backups(kit=kit)
    drop = chosen_for_prune(backups, now=kit.clock.now(), keep_days=kit.settings.backup.keep_days)
    for backup_id in drop:
        await in_thread(kit.target.delete_folder, backup_id)
    await record(
        db,
        action="backup.prune",
        target_id=None,
        changes={"target": kit.target.where, "removed": drop, "kept": len(backups) - len(drop)},
    )
    return drop
