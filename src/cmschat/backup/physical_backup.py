"""Making and drilling physical MariaDB backups (the async steps around ``physical.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cmschat.attachments.storage import Storage
from cmschat.attachments.storage.base import in_thread
from cmschat.backup import binlog
from cmschat.backup.binlog import Cut
from cmschat.backup.crypto import Sealed, open_sealed
from cmschat.backup.engines import Engine, Facts
from cmschat.backup.files import ARTIFACT as FILES_ARTIFACT
from cmschat.backup.files import unpack_files
from cmschat.backup.incremental import replay_chain, snapshot_facts
from cmschat.backup.keys import restore_identity
from cmschat.backup.manifest import Manifest
from cmschat.backup.mariadb import MariadbEngine
from cmschat.backup.physical import ARTIFACT, PhysicalEngine, scratch_server, unpack
from cmschat.backup.restore import check_revision
from cmschat.backup.service import Toolkit, fetch, staging
from cmschat.db.session import Database
from cmschat.errors import CmschatError, Conflict, Invalid


async def physical_copy(
    engine: Engine, db: Database, staging: Path, recipients: list[str]
) -> tuple[list[tuple[str, Sealed]], Facts]:
    """The sealed copy (P1) and the binary log P1→P2, with the facts read at P2.

    The manifest's binlog is P2 (incrementals continue from there) and keeps P1 as
    ``copy``: a drill replays the stored log from P1 to P2 before counting.
    """
    assert isinstance(engine, PhysicalEngine)  # noqa: S101 - chosen by the caller
    sealed, start = await in_thread(engine.copy, staging, recipients)
    end, facts = await snapshot_facts(db)
    end["database"] = engine.database
    logged = await in_thread(binlog.extract, engine, staging, start, end, recipients)
    facts.binlog = {**end, "copy": start}
    return [(engine.artifact, sealed), (binlog.ARTIFACT, logged)], facts


@contextlib.asynccontextmanager
async def drilled(
    *, kit: Toolkit, chain: list[Manifest], scratch: Path, store: Storage
) -> AsyncIterator[tuple[MariadbEngine, int]]:
    """A physical chain restored into a scratch ``mariadbd``: its engine and files restored.

    The copy is decrypted, unpacked and prepared in ``scratch``, served on a spare port,
    brought to P2 with the stored log, then the incrementals are replayed. The server is
    stopped on the way out, whatever happened; ``scratch`` (the caller's) holds its files.
    """
    check_revision(chain[0])
    identity = await in_thread(restore_identity, kit.settings)
    full = chain[0]
    folder = scratch / "full"
    folder.mkdir()
    await fetch(kit=kit, manifest=full, into=folder)
    copy, log, archive = (full.artifact(n) for n in (ARTIFACT, binlog.ARTIFACT, FILES_ARTIFACT))
    if copy is None or log is None or archive is None:
        raise Invalid(f"backup {full.id} lacks the artifacts a physical restore needs")
    files = await unpack_files(
        folder / FILES_ARTIFACT,
        folder,
        store,
        identity,
        expected=archive.sealed(),
        entries=full.files,
    )
    data = scratch / "data"
    await in_thread(unpack, folder / ARTIFACT, identity, copy.sealed(), data)
    (folder / ARTIFACT).unlink()  # prepared: the sealed copy is no longer needed here
    stack = contextlib.ExitStack()
    try:
        url = await in_thread(stack.enter_context, scratch_server(data, kit.engine.url))
        engine = MariadbEngine(url)
        step = partial(binlog.replay, engine, folder / binlog.ARTIFACT, identity, log.sealed())
        await in_thread(partial(step, until=None))
        if len(chain) > 1:
            files += await replay_chain(kit=kit, chain=chain[1:], until=None, into=(engine, store))
        yield engine, files
    finally:
        await in_thread(stack.close)


def _write_log(
    source: Path, identity: Any, expected: Sealed, until: datetime | None, into: Path
) -> bool:
    """Decrypt one stored log into a replayable SQL file (cut at ``until``); True if cut."""
    with source.open("rb") as reader, into.open("xb") as writer:
        cut = Cut(writer, until)
        open_sealed(reader, cut, identity, name=binlog.ARTIFACT, expected=expected)
        cut.close()
    return cut.cut


async def prepare_restore(
    *, kit: Toolkit, chain: list[Manifest], until: datetime | None
) -> tuple[Path, list[str], int]:
    """Restore the files, prepare the copy and write the logs to replay; the steps left.

    ``mariadb-backup --copy-back`` needs the server stopped and an empty data directory,
    so it is left to the operator with the exact commands: the directory, those steps,
    and the number of files restored into the store.
    """
    check_revision(chain[0])
    identity = await in_thread(restore_identity, kit.settings)
    engine = kit.engine
    assert isinstance(engine, MariadbEngine)  # noqa: S101 - physical backups are MariaDB
    target = kit.settings.data_dir / f"restore-{chain[0].id}"
    if target.exists():
        raise Conflict(f"restore: {target} exists (an earlier restore?); remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir(mode=0o700)  # the prepared copy and the logs are the data, unencrypted
    replay = target / "replay"
    replay.mkdir()
    files, logs = 0, []
    with staging(kit.settings) as scratch:
        for number, manifest in enumerate(chain):
            folder = scratch / manifest.id
            folder.mkdir()
            await fetch(kit=kit, manifest=manifest, into=folder)
            archive, log = manifest.artifact(FILES_ARTIFACT), manifest.artifact(binlog.ARTIFACT)
            if archive is None or log is None:
                raise Invalid(f"backup {manifest.id} lacks the artifacts a restore needs")
            files += await unpack_files(
                folder / FILES_ARTIFACT,
                folder,
                kit.storage,
                identity,
                expected=archive.sealed(),
                entries=manifest.files,
            )
            copy = manifest.artifact(ARTIFACT)
            if number == 0 and copy is not None:
                await in_thread(unpack, folder / ARTIFACT, identity, copy.sealed(), target / "data")
            written = replay / f"{number:02d}-{manifest.id}.sql"
            logs.append(written)
            cut = partial(_write_log, folder / log.name, identity, log.sealed(), until)
            if await in_thread(cut, written):
                break
    try:
        datadir = (await in_thread(engine.sql, "SELECT @@datadir"))[0][0].rstrip("/")
    except CmschatError:
        datadir = "/var/lib/mysql"  # the server is already stopped: Debian's default
    steps = [
        "systemctl stop cmschat mariadb",
        f"mv {datadir} {datadir}.before-restore && mkdir {datadir}",
        f"mariadb-backup --copy-back --target-dir={target / 'data'} --datadir={datadir}",
        f"chown -R mysql:mysql {datadir}",
        "systemctl start mariadb",
        *(f"mariadb {engine.database} < {log}" for log in logs),
        "cmschat migrate && systemctl start cmschat",
        f"rm -r {target}",
    ]
    return target, steps, files
