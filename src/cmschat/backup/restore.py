"""Verifying and restoring a backup.

A restore is all or nothing for the database: the artifact is decrypted and checked into
a temporary file (SQLite) or database (MariaDB) and only then swapped in. Files are put
into the store first, so a failure at any step leaves the old database as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory

from cmschat.attachments.storage import Storage
from cmschat.attachments.storage.base import in_thread
from cmschat.audit.service import audited
from cmschat.backup.crypto import open_sealed
from cmschat.backup.engines import Engine
from cmschat.backup.files import ARTIFACT as FILES_ARTIFACT
from cmschat.backup.files import unpack_files
from cmschat.backup.keys import restore_identity
from cmschat.backup.manifest import Manifest
from cmschat.backup.physical import ARTIFACT as PHYSICAL_ARTIFACT
from cmschat.backup.physical import PhysicalEngine
from cmschat.backup.service import Toolkit, fetch, load_manifest, record, staging
from cmschat.db.migrate import alembic_config, run_migrations
from cmschat.db.session import Database, create_engine
from cmschat.errors import Conflict, Invalid

log = logging.getLogger(__name__)


class _Discard:
    """A writer that keeps nothing (verify only needs the checksums)."""

    def write(self, data: Any) -> int:
        return len(data)


def check_revision(manifest: Manifest) -> None:
    """Refuse a backup made by a newer cmschat than this one (its schema is unknown here)."""
    if manifest.alembic_revision is None:
        return
    scripts = ScriptDirectory.from_config(alembic_config())
    if manifest.alembic_revision not in {rev.revision for rev in scripts.walk_revisions()}:
        raise Invalid(
            f"backup {manifest.id} has schema revision {manifest.alembic_revision}, unknown "
            f"to this cmschat (made by a newer version, {manifest.cmschat_version})"
        )


async def verify_backup(*, kit: Toolkit, backup_id: str) -> Manifest:
    """Decrypt every artifact and check every checksum, restoring nothing."""
    manifest = await load_manifest(kit=kit, backup_id=backup_id)
    identity = await in_thread(restore_identity, kit.settings)
    with staging(kit.settings) as scratch:
        await fetch(kit=kit, manifest=manifest, into=scratch)
        for artifact in manifest.artifacts:
            path = scratch / artifact.name

            def check(path: Path = path, name: str = artifact.name) -> None:
                with path.open("rb") as reader:
                    expected = manifest.artifact(name)
                    assert expected is not None  # noqa: S101 - listed just above
                    open_sealed(reader, _Discard(), identity, name=name, expected=expected.sealed())

            await in_thread(check)
    return manifest


@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    manifest: Manifest
    files: int
    seconds: float
    steps: tuple[str, ...] = ()
    """A physical backup: what is left for the operator to run (the copy is prepared)."""


async def restore_into(
    *,
    kit: Toolkit,
    manifest: Manifest,
    engine: Engine,
    storage: Storage,
    force: bool,
) -> int:
    """Restore a backup's database and files into the given engine and store."""
    check_revision(manifest)
    identity = await in_thread(restore_identity, kit.settings)
    if not force and await in_thread(engine.in_use):
        raise Conflict(
            "restore: the target database is not empty; stop cmschat and add --force to replace it"
        )
    database = manifest.artifact(engine.artifact)
    files = manifest.artifact(FILES_ARTIFACT)
    if database is None or files is None:
        raise Invalid(f"backup {manifest.id} lacks the artifacts a {engine.kind} restore needs")
    with staging(kit.settings) as scratch:
        await fetch(kit=kit, manifest=manifest, into=scratch)
        count = await unpack_files(
            scratch / FILES_ARTIFACT,
            scratch,
            storage,
            identity,
            expected=files.sealed(),
            entries=manifest.files,
        )
        swap = partial(
            engine.restore, scratch / engine.artifact, identity, database.sealed(), force=True
        )
        await in_thread(swap)
    return count


async def restore_backup(
    *, kit: Toolkit, backup_id: str, force: bool, until: datetime | None = None
) -> Restored:
    """Restore into the configured database and store, migrate, and record it there.

    An incremental ``backup_id`` restores its chain: the full backup, then each
    incremental up to it, replayed up to ``until`` if given (a point in time).
    """
    from cmschat.backup.incremental import chain_of, check_chain, check_target, replay_chain

    manifest = await load_manifest(kit=kit, backup_id=backup_id)
    if until is not None and kit.engine.kind == "sqlite":
        raise Invalid("restore --until needs MariaDB with incremental (binary log) backups")
    chain = await chain_of(kit=kit, manifest=manifest)
    if until is not None and until < chain[0].created_at:
        raise Invalid(
            f"--until is before the chain's full backup {chain[0].id}; pick an older backup"
        )
    check_target(chain[1:], kit.engine)
    started = time.monotonic()
    if len(chain) > 1:
        # Every log checked before the live database is touched (replay_chain checks
        # again, after the full backup is in: an operator's restore pays twice).
        await check_chain(kit=kit, chain=chain[1:], until=until)
    if chain[0].artifact(PHYSICAL_ARTIFACT) is not None:
        from cmschat.backup.physical_backup import prepare_restore

        _, steps, files = await prepare_restore(kit=kit, chain=chain, until=until)
        return Restored(manifest, files, round(time.monotonic() - started, 3), tuple(steps))
    engine = kit.engine
    if isinstance(engine, PhysicalEngine):
        engine = engine.logical()  # a dump made before the switch to mariadb-backup
    files = await restore_into(
        kit=kit, manifest=chain[0], engine=engine, storage=kit.storage, force=force
    )
    if len(chain) > 1:
        files += await replay_chain(kit=kit, chain=chain[1:], until=until)
    live = create_engine(kit.settings.database_url)
    try:
        await run_migrations(live)
        seconds = round(time.monotonic() - started, 3)
        await record(
            audited(Database(live, kit.clock)),
            action="backup.restore",
            target_id=manifest.id,
            changes={
                "files": files,
                "seconds": seconds,
                "forced": force,
                "until": until.isoformat() if until else None,
            },
        )
    finally:
        await live.dispose()
    return Restored(manifest, files, seconds)
