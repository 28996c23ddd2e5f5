"""Incremental backups and point-in-time restore on a MariaDB with binary logging."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from cmschat.attachments.storage.base import in_thread
from cmschat.backup import service
from cmschat.backup.drill import run_drill
from cmschat.backup.restore import restore_backup
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.session import create_engine
from cmschat.errors import Invalid
from tests.backup.binlog_server import binlog_server, database_url  # noqa: F401 - fixtures
from tests.backup.conftest import Chat, snapshot_files, snapshot_rows

pytestmark = pytest.mark.slow


async def _next_second(after: datetime) -> None:
    # Binary-log events carry whole seconds: writes meant to fall after a point in time
    # must start in a later second than it.
    remaining = (after + timedelta(seconds=1.05) - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, remaining))


async def _lose_everything(context: AppContext, url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET FOREIGN_KEY_CHECKS=0"))
            tables = (await connection.execute(text("SHOW TABLES"))).scalars().all()
            for table in tables:
                await connection.execute(text(f"DROP TABLE `{table}`"))
    finally:
        await engine.dispose()


async def test_restore_to_a_point_between_a_full_and_an_incremental_backup(
    context: AppContext,
    chat: Chat,
    kit: service.Toolkit,
    elsewhere: service.Toolkit,
    clock: FakeClock,
) -> None:
    url = context.settings.database_url
    await chat.say(3, prefix="before the full backup")
    await chat.send_file("a")
    full, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    assert full.binlog is not None and full.binlog["position"] > 0

    await chat.say(2, prefix="between")
    await chat.send_file("b")
    expected_rows = await snapshot_rows(url)
    expected_files = await snapshot_files(url, context.storage)
    moment = datetime.now(UTC)
    await _next_second(moment)

    await chat.say(2, prefix="after the point in time")
    await chat.send_file("c")
    incremental, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")
    assert incremental.base_id == full.id and len(incremental.files) == 2
    await chat.say(1, prefix="after every backup")
    live = await snapshot_rows(url)
    clock.advance(minutes=30)
    # A drill restores the newest chain: the full backup, then the incremental's log
    # renamed into the scratch database; the counts are the incremental's, the RPO its age.
    drill = await run_drill(kit=kit, db=context.db)
    assert drill.ok and drill.backup_id == incremental.id, drill.checks
    checks = {check.name: check.detail for check in drill.checks}
    assert f"{full.id} and 1 incremental(s)" in checks["restore"]
    assert incremental.row_counts["messages"] == full.row_counts["messages"] + 6
    assert drill.rpo_seconds == 30 * 60
    # The replay went to the scratch copy: the live database only gained the drill's event.
    after = await snapshot_rows(url)
    assert after.pop("audit_events")[:-1] == live.pop("audit_events")
    assert after == live
    # The log names its database: replaying it into another one is refused up front.
    with pytest.raises(Invalid, match="replays into the database"):
        await restore_backup(kit=elsewhere, backup_id=incremental.id, force=False)
    assert not await in_thread(elsewhere.engine.in_use)

    await _lose_everything(context, url)
    for key in list(expected_files) + [f.key for f in incremental.files]:
        await context.storage.delete(key)

    await restore_backup(kit=kit, backup_id=incremental.id, force=True, until=moment)

    rows = await snapshot_rows(url)
    *trail, restore_event = rows.pop("audit_events")
    assert "backup.restore" in restore_event
    assert trail == expected_rows.pop("audit_events")
    assert rows == expected_rows
    assert await snapshot_files(url, context.storage) == expected_files

    # Without --until the whole chain is replayed: the later messages come back too.
    await restore_backup(kit=kit, backup_id=incremental.id, force=True)
    everything = await snapshot_rows(url)
    assert len(everything["messages"]) == len(expected_rows["messages"]) + 3


async def test_until_before_the_full_backup_is_refused(
    context: AppContext, chat: Chat, kit: service.Toolkit
) -> None:
    await chat.say(1)
    full, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    with pytest.raises(Invalid, match="before the chain's full backup"):
        await restore_backup(
            kit=kit, backup_id=full.id, force=True, until=full.created_at - timedelta(hours=1)
        )


async def test_a_chain_drill_checks_the_newest_manifest_and_leaves_no_scratch_behind(
    context: AppContext,
    chat: Chat,
    kit: service.Toolkit,
    binlog_server: str,  # noqa: F811
) -> None:
    await chat.say(2)
    full, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    first = await run_drill(kit=kit, db=context.db)
    assert first.ok and first.backup_id == full.id, first.checks
    await chat.say(2, prefix="after the first drill")
    incremental, _ = await service.run_backup(kit=kit, db=context.db, kind="incremental")

    # The first drill's scratch database is not in the incremental: replaying it makes
    # no database of that name again, and the drill of the chain passes.
    second = await run_drill(kit=kit, db=context.db)
    assert second.ok and second.backup_id == incremental.id, second.checks
    admin = create_engine(binlog_server + "/")
    try:
        async with admin.connect() as connection:
            left = (await connection.execute(text("SHOW DATABASES LIKE '%\\_drill\\_%'"))).all()
    finally:
        await admin.dispose()
    assert left == []

    # Counted against the incremental's manifest: one message it does not hold fails.
    path = f"{incremental.id}/manifest.json"
    changed = service.Manifest.from_json(kit.target.get_text(path) or "")
    changed.row_counts["messages"] += 1
    kit.target.put_text(path, changed.to_json())
    third = await run_drill(kit=kit, db=context.db)
    assert {check.name for check in third.checks if not check.ok} == {"row counts"}
