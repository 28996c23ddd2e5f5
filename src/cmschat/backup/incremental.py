"""Incremental backups (MariaDB binary logs) and restoring a chain to a point in time.

An incremental holds the binary-log events since the previous backup of its chain and
the files uploaded since; ``restore --until TIME`` restores the chain's full backup, then
replays the incrementals in order, stopping before the first transaction after TIME.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

import cmschat
from cmschat.attachments.storage import Storage
from cmschat.attachments.storage.base import in_thread
from cmschat.audit.models import AuditEvent
from cmschat.backup import binlog
from cmschat.backup.engines import Facts, collect_facts
from cmschat.backup.files import ARTIFACT as FILES_ARTIFACT
from cmschat.backup.files import archive_files, unpack_files
from cmschat.backup.keys import resolve_recipients, restore_identity
from cmschat.backup.manifest import Artifact, Manifest, new_id
from cmschat.backup.mariadb import MariadbEngine
from cmschat.backup.service import (
    Made,
    Toolkit,
    complete,
    fetch,
    list_backups,
    load_manifest,
    make_full,
    staging,
)
from cmschat.db.session import Database
from cmschat.errors import Invalid


async def chain_of(*, kit: Toolkit, manifest: Manifest) -> list[Manifest]:
    """The full backup an incremental builds on, then each incremental up to it, in order."""
    chain = [manifest]
    while chain[0].kind == "incremental":
        if chain[0].base_id is None:
            raise Invalid(f"incremental backup {chain[0].id} names no base backup")
        chain.insert(0, await load_manifest(kit=kit, backup_id=chain[0].base_id))
    return chain


async def snapshot_facts(db: Database) -> tuple[dict[str, Any], Facts]:
    """The binary-log position of one consistent snapshot, and the facts read in it.

    The row counts, audit head and files are exactly what the log up to that position
    holds, so a drill of the chain can check its restore against them.
    """
    async with db.engine.connect() as plain:
        connection = await plain.execution_options(isolation_level="REPEATABLE READ")
        await connection.execute(text("START TRANSACTION WITH CONSISTENT SNAPSHOT"))
        status = dict(
            (row[0], row[1])
            for row in await connection.execute(text("SHOW STATUS LIKE 'binlog_snapshot_%'"))
        )
        facts = await connection.run_sync(collect_facts)
        await connection.rollback()
    position = {
        "file": str(status["Binlog_snapshot_file"]),
        "position": int(status["Binlog_snapshot_position"]),
    }
    return position, facts


async def chain_broken(*, db: Database, base: Manifest) -> str | None:
    """Why the binary log after ``base`` cannot be replayed onto ``base``, or None.

    A restore loads the backup into a scratch database and moves its tables over the
    live ones: the log after ``base`` then holds a DROP TABLE of every table and a
    RENAME TABLE from a database that no longer exists, so a chain replaying it fails
    halfway and leaves no tables. The restored audit chain is older than the restore,
    so the restore is found by the time of its ``backup.restore`` event, not its id;
    a restore made without cmschat shows as ``base``'s audit head missing from the chain.
    """
    async with db.engine.connect() as connection:
        restored = await connection.scalar(
            select(func.max(AuditEvent.occurred_at)).where(
                AuditEvent.action == "backup.restore", AuditEvent.occurred_at > base.created_at
            )
        )
        head = None
        if base.audit_head is not None:
            head = await connection.scalar(
                select(AuditEvent.hash).where(AuditEvent.id == base.audit_head[0])
            )
    if restored is not None:
        return f"a restore since {base.id} (at {restored.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)"
    if base.audit_head is not None and head != base.audit_head[1]:
        return (
            f"the audit chain no longer holds the head of {base.id} (event "
            f"{base.audit_head[0]}): the database was replaced or restored since"
        )
    return None


async def make_incremental(*, kit: Toolkit, db: Database) -> Made:
    """The binary log since the newest backup, and the files uploaded since.

    After a restore (``chain_broken``) that log cannot be replayed: a full backup is
    made instead, starting a new chain, with a ``note`` saying why.
    """
    engine = kit.engine
    assert isinstance(engine, MariadbEngine)  # noqa: S101 - SQLite is refused before
    await in_thread(binlog.status, engine)  # says what to set when logging is off
    base = next(
        (b.manifest for b in await list_backups(kit=kit) if b.manifest and b.manifest.binlog),
        None,
    )
    if base is None or base.binlog is None:
        raise Invalid("no backup to build on: make a full backup with binary logging on first")
    broken = await chain_broken(db=db, base=base)
    if broken is not None:
        made = await make_full(kit=kit, db=db)
        note = f"{broken}: full backup made to start a new chain"
        changes = {**made.changes, "requested": "incremental", "note": note}
        return Made(made.manifest, made.recipients, changes)
    recipients = await in_thread(resolve_recipients, kit.settings)
    started, clock_start = kit.clock.now(), time.monotonic()
    backup_id = new_id(started, "incremental")
    end, facts = await snapshot_facts(db)
    end["database"] = engine.database
    kept = {entry.key for m in await chain_of(kit=kit, manifest=base) for entry in m.files}
    new_files = [entry for entry in facts.files if entry.key not in kept]
    with staging(kit.settings) as scratch:
        sealed = await in_thread(binlog.extract, engine, scratch, base.binlog, end, recipients.keys)
        archived = await archive_files(
            kit.storage, new_files, scratch / FILES_ARTIFACT, recipients.keys
        )
        for name in (binlog.ARTIFACT, FILES_ARTIFACT):
            await in_thread(kit.target.put_file, f"{backup_id}/{name}", scratch / name)
    manifest = Manifest(
        id=backup_id,
        kind="incremental",
        created_at=started,
        cmschat_version=cmschat.__version__,
        database_kind=engine.kind,
        alembic_revision=facts.alembic_revision or base.alembic_revision,
        artifacts=[
            Artifact.of(binlog.ARTIFACT, sealed),
            Artifact.of(FILES_ARTIFACT, archived.sealed),
        ],
        files=archived.files,
        row_counts=facts.row_counts,
        audit_head=facts.audit_head,
        binlog=end,
        base_id=base.id,
        duration_seconds=round(time.monotonic() - clock_start, 3),
    )
    await complete(kit=kit, manifest=manifest)
    return Made(
        manifest, recipients, {"kind": "incremental", "base": base.id, "size": manifest.size}
    )


def check_target(chain: list[Manifest], engine: object) -> None:
    """Invalid unless the incrementals can be replayed into ``engine``'s database."""
    if not chain:
        return
    if not isinstance(engine, MariadbEngine):
        raise Invalid("incremental backups restore on MariaDB only")
    for manifest in chain:
        made_on = (manifest.binlog or {}).get("database")
        if made_on != engine.database:
            # The binary log names its database in every event: replayed elsewhere it
            # would change that database, not this one.
            raise Invalid(
                f"incremental backup {manifest.id} replays into the database {made_on!r} "
                f"it was made from, not {engine.database!r}: restore into a database of "
                "that name"
            )


async def replay_chain(
    *,
    kit: Toolkit,
    chain: list[Manifest],
    until: datetime | None,
    into: tuple[MariadbEngine, Storage] | None = None,
    fetched: list[Path] | None = None,
) -> int:
    """After the full backup is restored: the incrementals' files and transactions.

    Every log is checked before the first transaction is replayed, so damage found late
    cannot leave a half-replayed database. Returns the files restored. ``into``: a
    drill's database and store instead of the configured ones; the log's events are
    renamed to the scratch database on their way to it. ``fetched``: what
    ``fetch_checked`` already wrote (a restore checks before touching the database).
    """
    engine, storage = into or (kit.engine, kit.storage)
    assert isinstance(engine, MariadbEngine)  # noqa: S101 - chains exist on MariaDB only
    check_target(chain, kit.engine)
    identity = await in_thread(restore_identity, kit.settings)
    files = 0
    with contextlib.ExitStack() as stack:
        if fetched is None:
            scratch = stack.enter_context(staging(kit.settings))
            fetched = await fetch_checked(kit=kit, chain=chain, until=until, into=scratch)
        # Shorter than the chain when a log was cut at ``until``: the rest is after it.
        for manifest, plain in zip(chain, fetched, strict=False):
            archive = manifest.artifact(FILES_ARTIFACT)
            if archive is not None and manifest.files:
                files += await unpack_files(
                    plain.parent / FILES_ARTIFACT,
                    plain.parent,
                    storage,
                    identity,
                    expected=archive.sealed(),
                    entries=manifest.files,
                )
            made_on = (manifest.binlog or {}).get("database")
            await in_thread(partial(binlog.replay_plain, engine, plain, made_on=made_on))
    return files


def restore_inside(manifest: Manifest) -> Invalid:
    """The refusal of an incremental whose log holds a restore (``binlog.decrypt``)."""
    return Invalid(
        f"incremental backup {manifest.id} holds a restore of the live database, "
        "which its log cannot replay: restore with --until a time before that "
        "restore, or restore a backup made after it"
    )


async def fetch_checked(
    *, kit: Toolkit, chain: list[Manifest], until: datetime | None, into: Path
) -> list[Path]:
    """Download each incremental into ``into/ID/`` and decrypt its log there, once.

    ``into`` is private (``staging``): the plain logs are the database's content. Returns
    the plain logs to replay, in order, up to the one cut at ``until``. Invalid if a log
    holds a restore (up to ``until``): replayed, it would drop every table and stop
    (``binlog.decrypt``).
    """
    identity = await in_thread(restore_identity, kit.settings)
    plain = []
    for manifest in chain:
        folder = into / manifest.id
        folder.mkdir()
        await fetch(kit=kit, manifest=manifest, into=folder)
        log_artifact = manifest.artifact(binlog.ARTIFACT)
        assert log_artifact is not None  # noqa: S101 - written by make_incremental
        written = folder / "binlog.sql"
        check = partial(
            binlog.decrypt,
            folder / binlog.ARTIFACT,
            identity,
            log_artifact.sealed(),
            until=until,
            into=written,
        )
        cut, holds_restore = await in_thread(check)
        if holds_restore:
            raise restore_inside(manifest)
        plain.append(written)
        if cut:
            break
    return plain
