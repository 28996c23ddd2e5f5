"""Physical MariaDB backups (mariadb-backup) on the suite's binary-logging server."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import cast

import pyrage
import pytest
from sqlalchemy.engine import make_url

from cmschat.attachments.storage.base import in_thread
from cmschat.backup import physical as physical_module
from cmschat.backup import service
from cmschat.backup.crypto import BackupCorrupt
from cmschat.backup.drill import run_drill
from cmschat.backup.physical import ARTIFACT, PhysicalEngine, scratch_server
from cmschat.backup.physical_backup import finish_restore
from cmschat.backup.restore import restore_backup, verify_backup
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.errors import CmschatError, Invalid
from tests.backup.binlog_server import binlog_server  # noqa: F401 - fixture
from tests.backup.conftest import Chat, snapshot_files, snapshot_rows, toolkit
from tests.backup.test_damage import _flip
from tests.backup.test_point_in_time import database_url  # noqa: F401 - fixture
from tests.cli.test_cli import FAST, assert_one_line_error
from tests.processes import clean_env, cmschat

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mariadb-backup") is None, reason="needs mariadb-backup"),
]


def _runtime_dirs() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("cmschat-mariadbd-*")}


def served_kit(kit: service.Toolkit, served: str) -> service.Toolkit:
    """``kit`` pointed at a scratch server: where the copy-back would have put the data."""
    settings = kit.settings.model_copy(update={"database_url": served})
    return toolkit(settings, kit.storage, cast(FakeClock, kit.clock))


@pytest.fixture
def physical(kit: service.Toolkit, context: AppContext, clock: FakeClock) -> service.Toolkit:
    """The toolkit with ``CMSCHAT_BACKUP__MARIADB_METHOD=mariadb-backup``."""
    settings = context.settings
    settings.backup = settings.backup.model_copy(update={"mariadb_method": "mariadb-backup"})
    made = toolkit(settings, context.storage, clock)
    assert isinstance(made.engine, PhysicalEngine)
    return made


async def test_a_physical_full_taken_during_writes_and_an_incremental_drill_exactly(
    context: AppContext, chat: Chat, physical: service.Toolkit, clock: FakeClock
) -> None:
    await chat.say(3, prefix="before the copy")
    await chat.send_file("a")
    done = asyncio.Event()
    written = 0

    async def keep_writing() -> None:
        nonlocal written
        while not done.is_set():
            await chat.say(1, prefix="during the copy")
            written += 1

    writer = asyncio.create_task(keep_writing())
    try:
        full, _ = await service.run_backup(kit=physical, db=context.db, kind="full")
    finally:
        done.set()
        await writer
    assert full.artifact(ARTIFACT) is not None and full.artifact("binlog.sql.zst.age")
    assert full.binlog is not None and "copy" in full.binlog
    # The counts are those at P2, after the copy: at least what was there before it.
    assert full.row_counts["messages"] >= 3
    first = await run_drill(kit=physical, db=context.db, backup_id=full.id)
    assert first.ok, first.checks

    await chat.say(2, prefix="after the full backup")
    await chat.send_file("b")
    incremental, _ = await service.run_backup(kit=physical, db=context.db, kind="incremental")
    assert incremental.base_id == full.id
    expected = await snapshot_rows(context.settings.database_url)
    assert incremental.row_counts["messages"] >= full.row_counts["messages"] + 2
    clock.advance(minutes=10)
    drill = await run_drill(kit=physical, db=context.db)
    assert drill.ok and drill.backup_id == incremental.id, drill.checks
    checks = {check.name: check.detail for check in drill.checks}
    assert f"{full.id} and 1 incremental(s)" in checks["restore"]
    assert "tables match the manifest" in checks["row counts"]
    assert drill.rpo_seconds == 10 * 60
    # The scratch server's files went with the drill's staging directory.
    assert not list(context.settings.data_dir.glob(".backup-*"))

    # restore: files into the store, the copy prepared, the logs written, the steps left.
    for key in list(await snapshot_files(context.settings.database_url, context.storage)):
        await context.storage.delete(key)
    restored = await restore_backup(kit=physical, backup_id=incremental.id, force=False)
    assert restored.files == 2
    assert any(step.startswith("mariadb-backup --copy-back") for step in restored.steps)
    prepared = context.settings.data_dir / f"restore-{full.id}"
    database = str(make_url(context.settings.database_url).database)
    assert prepared.stat().st_mode & 0o777 == 0o700
    # cmschat's database and the server's accounts, so a copied-back server starts.
    assert (prepared / "data" / database).is_dir() and (prepared / "data" / "mysql").is_dir()
    assert any(step.startswith("cmschat backup finish-restore ") for step in restored.steps)
    # What the steps give: the prepared copy with the logs replayed holds the rows at
    # the incremental (the live database has since gained audit events of its own).
    url = context.settings.database_url
    with scratch_server(prepared / "data", url) as served:
        await finish_restore(kit=served_kit(physical, served), directory=prepared)
        got = await snapshot_rows(served)
    for name in ("users", "rooms", "messages", "attachments"):
        assert got[name] == expected[name], name
    trail = got["audit_events"][:-1]  # then the restore's own event
    assert trail == expected["audit_events"][: len(trail)]
    assert len(trail) >= len(expected["audit_events"]) - 1

    stored = Path(context.settings.backup.url.removeprefix("file://")) / full.id
    # A damaged log fails the drill after the scratch server started: it is stopped
    # and its files are gone all the same.
    before = await in_thread(_runtime_dirs)
    _flip(stored / "binlog.sql.zst.age")
    failed = await run_drill(kit=physical, db=context.db, backup_id=full.id)
    restore = next(check for check in failed.checks if check.name == "restore")
    assert not failed.ok and not restore.ok and "damaged" in restore.detail, failed.checks
    assert await in_thread(_runtime_dirs) == before
    assert not list(context.settings.data_dir.glob(".backup-*"))
    _flip(stored / ARTIFACT)
    with pytest.raises(BackupCorrupt, match="damaged or truncated"):
        await verify_backup(kit=physical, backup_id=full.id)


async def test_a_remote_database_is_refused_in_one_line(
    context: AppContext, physical: service.Toolkit
) -> None:
    remote = PhysicalEngine("mysql+asyncmy://cmschat@db.example.net:3306/cmschat")
    physical.engine = remote
    with pytest.raises(Invalid, match="must run on this host") as refused:
        await service.run_backup(kit=physical, db=context.db, kind="full")
    assert "\n" not in refused.value.message
    assert await service.list_backups(kit=physical) == []


async def test_a_missing_tool_is_named_in_one_line(
    context: AppContext, physical: service.Toolkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(physical_module.shutil, "which", lambda *_args, **_kwargs: None)
    with pytest.raises(CmschatError, match="mariadb-backup is not installed") as refused:
        await service.run_backup(kit=physical, db=context.db, kind="full")
    assert "\n" not in refused.value.message
    assert await service.list_backups(kit=physical) == []


def test_the_cli_refuses_a_remote_database_and_a_bad_method_in_one_line(tmp_path: Path) -> None:
    public = str(pyrage.x25519.Identity.generate().to_public())
    env = clean_env(
        **FAST,
        CMSCHAT_DATABASE_URL="mysql+asyncmy://cmschat@db.example.net:3306/cmschat",
        CMSCHAT_SECRET_KEY="k" * 40,
        CMSCHAT_BACKUP__RECIPIENTS=public,
        CMSCHAT_BACKUP__MARIADB_METHOD="mariadb-backup",
    )
    assert_one_line_error(
        cmschat(tmp_path, "backup", "run", env=env), "db.example.net", "MARIADB_METHOD=dump"
    )
    wrong = env | {"CMSCHAT_BACKUP__MARIADB_METHOD": "xtrabackup"}
    assert_one_line_error(cmschat(tmp_path, "backup", "run", env=wrong), "MARIADB_METHOD")


async def test_a_dump_made_before_the_switch_still_restores(
    context: AppContext, chat: Chat, kit: service.Toolkit, physical: service.Toolkit
) -> None:
    await chat.say(2)
    dump, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    expected = await snapshot_rows(context.settings.database_url)
    await chat.say(3, prefix="lost by the restore")
    restored = await restore_backup(kit=physical, backup_id=dump.id, force=True)
    assert restored.steps == ()
    rows = await snapshot_rows(context.settings.database_url)
    assert rows["messages"] == expected["messages"]
