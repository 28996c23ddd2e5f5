"""Verifying and restoring a backup.

A restore is all or nothing for the database: the artifact is decrypted and checked into
a temporary file (SQLite) or database (MariaDB) and only then swapped in. Files are put
into the store first, so a failure at any step leaves the old database as it was.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
from collections.abc import Mapping
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


def reached(chain: list[Manifest], until: datetime | None) -> dict[str, object]:
    """Where a restore of ``chain`` (the backups replayed) ends: a time or a log position."""
    position = chain[-1].binlog or {}
    return {
        "backup": chain[-1].id,
        "until": until.isoformat() if until else None,
        "binlog": None if until else {k: position.get(k) for k in ("file", "position")},
    }


def operator() -> str:
    """Who runs this command: the login user and the host, as an audit event names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


async def record_restore(
    *, kit: Toolkit, database_url: str, backup_id: str, changes: Mapping[str, object]
) -> None:
    """Migrate a restored database and write its ``backup.restore`` event into it.

    The event continues the restored audit chain from its head, so ``audit verify``
    passes, and names the operator. Written last: a restore that failed on the way has
    none (and an incremental after it would not start a new chain: see ``chain_broken``).
    """
    restored = create_engine(database_url)
    try:
        await run_migrations(restored)
        await record(
            audited(Database(restored, kit.clock)),
            action="backup.restore",
            target_id=backup_id,
            changes={**changes, "operator": operator()},
        )
    finally:
        await restored.dispose()


async def restore_backup(
    *, kit: Toolkit, backup_id: str, force: bool, until: datetime | None = None
) -> Restored:
    """Restore into the configured database and store, migrate, and record it there.

    An incremental ``backup_id`` restores its chain: the full backup, then each
    incremental up to it, replayed up to ``until`` if given (a point in time). Each
    artifact is decrypted once.
    """
    from cmschat.backup.incremental import chain_of, check_target, fetch_checked, replay_chain

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
    if chain[0].artifact(PHYSICAL_ARTIFACT) is not None:
        from cmschat.backup.physical_backup import prepare_restore

        _, steps, files = await prepare_restore(kit=kit, chain=chain, until=until)
        return Restored(manifest, files, round(time.monotonic() - started, 3), tuple(steps))
    engine = kit.engine
    if isinstance(engine, PhysicalEngine):
        engine = engine.logical()  # a dump made before the switch to mariadb-backup
    with staging(kit.settings) as scratch:
        # Every log decrypted and checked before the live database is touched; replayed
        # from these plain copies afterwards.
        fetched = await fetch_checked(kit=kit, chain=chain[1:], until=until, into=scratch)
        files = await restore_into(
            kit=kit, manifest=chain[0], engine=engine, storage=kit.storage, force=force
        )
        if len(chain) > 1:
            files += await replay_chain(kit=kit, chain=chain[1:], until=until, fetched=fetched)
    seconds = round(time.monotonic() - started, 3)
    changes = {
        "files": files,
        "seconds": seconds,
        "forced": force,
        "until": until.isoformat() if until else None,
        "reached": reached(chain[: 1 + len(fetched)], until),
    }
    await record_restore(
        kit=kit, database_url=kit.settings.database_url, backup_id=manifest.id, changes=changes
    )
    return Restored(manifest, files, seconds)
