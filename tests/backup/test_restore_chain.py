"""A restore into the live database (a rollback) and the incremental backups after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from cmschat.backup import incremental, service
from cmschat.backup.drill import run_drill
from cmschat.backup.restore import restore_backup, restore_into
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.session import create_engine
from cmschat.errors import Invalid
from tests.backup.binlog_server import binlog_server, database_url  # noqa: F401 - fixtures
from tests.backup.conftest import Chat, snapshot_rows
from tests.cli.test_cli import FAST
from tests.processes import clean_env, cmschat
from tests.support import TEST_SECRET

pytestmark = pytest.mark.slow


async def _empty(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET FOREIGN_KEY_CHECKS=0"))
            for table in (await connection.execute(text("SHOW TABLES"))).scalars().all():
                await connection.execute(text(f"DROP TABLE `{table}`"))
    finally:
        await engine.dispose()


async def test_after_a_rollback_the_newest_chain_restores_the_live_state(
    context: AppContext,
    chat: Chat,
    kit: service.Toolkit,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = context.settings.database_url
    await chat.say(2, prefix="in A")
    older, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(minutes=10)
    await chat.say(3, prefix="in B only")
    newer, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(minutes=10)
    await chat.say(1, prefix="after B, undone by the rollback")

    # The operator rolls the live database back to the older backup; users write on.
    clock.advance(minutes=10)
    await restore_backup(kit=kit, backup_id=older.id, force=True)
    clock.advance(minutes=10)
    await chat.say(2, prefix="after the rollback")
    live = await snapshot_rows(url)
    assert [row for row in live["messages"] if "in B only" in str(row)] == []

    # The scheduled incremental cannot build on B: the log since B holds the restore's
    # DROP TABLE and a RENAME TABLE from its scratch database, long gone; replayed, the
    # chain failed halfway and left no tables. It makes a full backup instead, and says
    # so in its audit event.
    clock.advance(minutes=10)
    made, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")
    drill = await run_drill(kit=kit, db=context.db)
    assert drill.ok, drill.checks
    assert made.kind == "full" and made.base_id is None
    assert made.row_counts["messages"] == len(live["messages"])
    (event,) = await _events(url, "backup.run", made.id)
    assert f"a restore since {newer.id} (at 2026-01-01 09:30:00 UTC)" in event
    assert "full backup made to start a new chain" in event
    # What a server's scheduler or console (the same announce, after the child) logs.
    warned = [r for r in caplog.records if getattr(r, "event.action", None) == "backup.new_chain"]
    assert [r.levelname for r in warned] == ["WARNING"]
    assert warned[0].getMessage().startswith(f"a restore since {newer.id} ")

    # The new chain goes on with incrementals; its newest restores the live state.
    clock.advance(minutes=10)
    await chat.say(2, prefix="on the new chain")
    live = await snapshot_rows(url)
    clock.advance(minutes=10)
    step, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")
    assert step.kind == "incremental" and step.base_id == made.id

    drill = await run_drill(kit=kit, db=context.db)
    assert drill.ok and drill.backup_id == step.id, drill.checks

    await _empty(url)
    await restore_backup(kit=kit, backup_id=step.id, force=True)
    rows = await snapshot_rows(url)
    *trail, restore_event = rows.pop("audit_events")
    assert "backup.restore" in restore_event
    assert trail == live.pop("audit_events")
    assert rows == live


async def test_a_database_replaced_without_cmschat_also_starts_a_new_chain(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock
) -> None:
    await chat.say(1, prefix="in A")
    older, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(minutes=10)
    await chat.say(2, prefix="in B only")
    newer, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    # Loaded by hand (no backup.restore event): B's audit head is gone from the chain.
    await restore_into(
        kit=kit, manifest=older, engine=kit.engine, storage=context.storage, force=True
    )
    clock.advance(minutes=10)
    made, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")
    assert made.kind == "full"
    (event,) = await _events(context.settings.database_url, "backup.run", made.id)
    assert f"the audit chain no longer holds the head of {newer.id}" in event

    # Nothing restored since: the next one is an incremental again.
    clock.advance(minutes=10)
    again, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")
    assert again.kind == "incremental" and again.base_id == made.id


async def test_backup_run_says_in_one_line_that_it_made_a_full_backup_instead(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock, tmp_path: Path
) -> None:
    await chat.say(1)
    older, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(minutes=10)
    await restore_backup(kit=kit, backup_id=older.id, force=True)
    settings = context.settings
    assert settings.backup.identity_file is not None
    env = clean_env(
        **FAST,
        CMSCHAT_DATABASE_URL=settings.database_url,
        CMSCHAT_DATA_DIR=str(settings.data_dir),
        CMSCHAT_SECRET_KEY=TEST_SECRET,
        CMSCHAT_BACKUP__RECIPIENTS=",".join(settings.backup.recipients),
        CMSCHAT_BACKUP__IDENTITY_FILE=str(settings.backup.identity_file),
    )
    ran = await asyncio.to_thread(
        cmschat, tmp_path, "backup", "run", "--kind", "incremental", env=env
    )
    assert ran.returncode == 0, ran.stderr
    said, written = ran.stdout.splitlines()
    assert said == (
        f"cmschat: a restore since {older.id} (at 2026-01-01 09:10:00 UTC): "
        "full backup made to start a new chain"
    )
    assert written.startswith("cmschat: backup ") and "-full written" in written


async def test_a_chain_that_holds_a_restore_is_refused_before_the_live_database_is_touched(
    context: AppContext,
    chat: Chat,
    kit: service.Toolkit,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Such chains exist: an earlier cmschat built on the newest backup after a restore.
    async def never(**_: object) -> None:
        return None

    monkeypatch.setattr(incremental, "chain_broken", never)
    await chat.say(1)
    older, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(minutes=10)
    await restore_backup(kit=kit, backup_id=older.id, force=True)
    await chat.say(1, prefix="after the restore")
    made, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")
    assert made.kind == "incremental" and made.base_id == older.id

    drill = await run_drill(kit=kit, db=context.db)
    failed = {check.name: check.detail for check in drill.checks if not check.ok}
    assert list(failed) == ["restore"] and "holds a restore" in failed["restore"]

    url = context.settings.database_url
    before = await snapshot_rows(url)
    with pytest.raises(Invalid, match=f"{made.id} holds a restore of the live database"):
        await restore_backup(kit=kit, backup_id=made.id, force=True)
    assert await snapshot_rows(url) == before


async def _events(url: str, action: str, target_id: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT changes FROM audit_events WHERE action = :a AND target_id = :t"),
                {"a": action, "t": target_id},
            )
            return [str(row[0]) for row in rows]
    finally:
        await engine.dispose()
