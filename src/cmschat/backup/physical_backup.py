"""Making and drilling physical MariaDB backups (the async steps around ``physical.py``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cmschat.attachments.storage import Storage
from cmschat.attachments.storage.base import in_thread
from cmschat.backup import binlog
from cmschat.backup.crypto import Sealed
from cmschat.backup.engines import Engine, Facts
from cmschat.backup.files import ARTIFACT as FILES_ARTIFACT
from cmschat.backup.files import unpack_files
from cmschat.backup.incremental import replay_chain, restore_inside, snapshot_facts
from cmschat.backup.keys import restore_identity
from cmschat.backup.manifest import Manifest
from cmschat.backup.mariadb import MariadbEngine
from cmschat.backup.physical import ARTIFACT, PhysicalEngine, scratch_server, unpack
from cmschat.backup.restore import check_revision, reached, record_restore
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
        plain = folder / "binlog.sql"  # in the caller's private scratch directory
        decrypt = partial(binlog.decrypt, folder / binlog.ARTIFACT, identity, log.sealed())
        await in_thread(partial(decrypt, until=None, into=plain))
        await in_thread(binlog.replay_plain, engine, plain)
        if len(chain) > 1:
            files += await replay_chain(kit=kit, chain=chain[1:], until=None, into=(engine, store))
        yield engine, files
    finally:
        await in_thread(stack.close)


STATE = "restore.json"
"""In a prepared restore's directory: what ``finish_restore`` replays and records."""
FINISHED = "finished"


async def _write_logs(
    *, kit: Toolkit, chain: list[Manifest], until: datetime | None, scratch: Path, into: Path
) -> list[Path]:
    """Fetch the chain into ``scratch`` and decrypt each log, once, into ``into``.

    Checked on the way (``binlog.decrypt``), before anything is restored; stops after
    the log cut at ``until``.
    """
    identity = await in_thread(restore_identity, kit.settings)
    logs: list[Path] = []
    for number, manifest in enumerate(chain):
        folder = scratch / manifest.id
        folder.mkdir()
        await fetch(kit=kit, manifest=manifest, into=folder)
        archive, log = manifest.artifact(FILES_ARTIFACT), manifest.artifact(binlog.ARTIFACT)
        if archive is None or log is None:
            raise Invalid(f"backup {manifest.id} lacks the artifacts a restore needs")
        written = into / f"{number:02d}-{manifest.id}.sql"
        step = partial(
            binlog.decrypt, folder / log.name, identity, log.sealed(), until=until, into=written
        )
        cut, holds_restore = await in_thread(step)
        if number > 0 and holds_restore:
            raise restore_inside(manifest)
        logs.append(written)
        if cut:
            break
    return logs


async def prepare_restore(
    *, kit: Toolkit, chain: list[Manifest], until: datetime | None
) -> tuple[Path, list[str], int]:
    """Restore the files, prepare the copy and write the logs to replay; the steps left.

    ``mariadb-backup --copy-back`` needs the server stopped and an empty data directory,
    so it is left to the operator with the exact commands: the directory, those steps,
    and the number of files restored into the store. Each artifact is decrypted once;
    the plain copy and logs stay in the restore's directory (0700), removed on failure.
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
    files = 0
    try:
        with staging(kit.settings) as scratch:
            logs = await _write_logs(
                kit=kit, chain=chain, until=until, scratch=scratch, into=replay
            )
            for number, manifest in enumerate(chain[: len(logs)]):
                folder = scratch / manifest.id
                archive = manifest.artifact(FILES_ARTIFACT)
                assert archive is not None  # noqa: S101 - checked by _write_logs
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
                    step = partial(unpack, folder / ARTIFACT, identity, copy.sealed())
                    await in_thread(step, target / "data")
        state = {
            "backup": chain[-1].id,
            "chain": [manifest.id for manifest in chain[: len(logs)]],
            "reached": reached(chain[: len(logs)], until),
            "files": files,
            "replay": [log.name for log in logs],
        }
        await in_thread((target / STATE).write_text, json.dumps(state, indent=2))
    except BaseException:
        await in_thread(shutil.rmtree, target, True)  # the plain data, half written
        raise
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
        f"cmschat backup finish-restore {target}",
        "systemctl start cmschat",
        f"rm -r {target}",
    ]
    return target, steps, files


async def finish_restore(*, kit: Toolkit, directory: Path) -> dict[str, Any]:
    """After the copy-back: replay the logs in order, migrate, and audit the restore.

    The ``backup.restore`` event goes into the restored database after the last log
    went in whole; a replay that fails leaves none (start again from the copy-back).
    Returns what the event records.
    """
    if not (directory / STATE).is_file():
        raise Invalid(f"restore: {directory} holds no prepared restore ({STATE} is missing)")
    engine = kit.engine
    if not isinstance(engine, MariadbEngine):
        raise Invalid("restore: finish-restore replays into MariaDB; this cmschat uses SQLite")
    if (directory / FINISHED).exists():
        raise Conflict(f"restore: {directory} was finished already; its logs are replayed")
    state = json.loads(await in_thread((directory / STATE).read_text))
    started = time.monotonic()
    for name in state["replay"]:
        await in_thread(binlog.replay_plain, engine, directory / "replay" / name)
    changes = {
        "physical": True,
        "chain": state["chain"],
        "reached": state["reached"],
        "files": state["files"],
        "seconds": round(time.monotonic() - started, 3),
    }
    await record_restore(
        kit=kit, database_url=engine.url, backup_id=state["backup"], changes=changes
    )
    await in_thread((directory / FINISHED).touch)
    return changes
