"""Full backup and restore: every row and every file comes back, checked and encrypted."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cmschat.audit.models import AuditHead
from cmschat.backup import service
from cmschat.backup.crypto import IDENTITY_NAME
from cmschat.backup.restore import restore_backup, verify_backup
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from cmschat.errors import Conflict, Invalid
from tests.backup.conftest import Chat, snapshot_files, snapshot_rows, sqlite_only
from tests.support import audit_events


async def test_full_backup_restores_every_row_and_file(
    context: AppContext, chat: Chat, kit: service.Toolkit, elsewhere: service.Toolkit
) -> None:
    await chat.say(5)
    metas = [await chat.send_file(f"doc-{n}") for n in range(3)]
    rows = await snapshot_rows(context.settings.database_url)
    files = await snapshot_files(context.settings.database_url, context.storage)
    assert len(files) == 3

    manifest, recipients = await service.run_backup(kit=kit, db=context.db, kind="full")

    key = context.settings.data_dir / IDENTITY_NAME
    if context.settings.is_sqlite:
        # The first backup on the embedded default made a private key in the data dir.
        assert recipients.generated == key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert manifest.database_kind == kit.engine.kind and manifest.kind == "full"
    assert manifest.row_counts["messages"] == len(rows["messages"]) == 8
    assert manifest.alembic_revision is not None
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        head = await session.get(AuditHead, 1)
        assert head is not None
    assert manifest.audit_head is not None and manifest.audit_head[0] <= head.last_id
    assert {f.key for f in manifest.files} == set(files)
    assert {f.sha256 for f in manifest.files} == {m["sha256"] for m in metas}
    # Each stored artifact is what the manifest says, and no key is in the manifest.
    stored = Path(context.settings.backup.url.removeprefix("file://")) / manifest.id
    text = (stored / "manifest.json").read_text()
    assert "AGE-SECRET-KEY" not in text and json.loads(text)["id"] == manifest.id
    for artifact in manifest.artifacts:
        body = (stored / artifact.name).read_bytes()
        assert len(body) == artifact.size
        assert body.startswith(b"age-encryption.org/v1")
        assert b"%PDF" not in body and "안녕".encode() not in body
    # Audited, with the operation's facts.
    (event,) = await audit_events(context.db, action="backup.run")
    assert event.target_id == manifest.id and event.actor == "system:backup"

    # Keep writing after the backup: none of it may come back.
    await chat.say(2, prefix="after")
    await verify_backup(kit=kit, backup_id=manifest.id)

    other = elsewhere
    restored = await restore_backup(kit=other, backup_id=manifest.id, force=False)
    assert restored.files == 3
    after = await snapshot_rows(other.settings.database_url)
    # Everything as it was at the backup, plus the restore's own audit event.
    *trail, restore_event = after.pop("audit_events")
    assert trail == rows.pop("audit_events") and "backup.restore" in restore_event
    assert after == rows
    assert await snapshot_files(other.settings.database_url, other.storage) == files

    # The restored database is now in use: another restore needs --force.
    with pytest.raises(Conflict, match="not empty"):
        await restore_backup(kit=other, backup_id=manifest.id, force=False)
    await restore_backup(kit=other, backup_id=manifest.id, force=True)


@sqlite_only()
async def test_files_erased_after_the_backup_stay_restorable(
    context: AppContext, chat: Chat, kit: service.Toolkit, elsewhere: service.Toolkit
) -> None:
    await chat.send_file("kept")
    files = await snapshot_files(context.settings.database_url, context.storage)
    manifest, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    for key in files:
        await context.storage.delete(key)
    await restore_backup(kit=elsewhere, backup_id=manifest.id, force=False)
    assert await snapshot_files(elsewhere.settings.database_url, elsewhere.storage) == files


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_incremental_names_the_setting_where_binary_logging_is_off(
    context: AppContext, kit: service.Toolkit
) -> None:
    with pytest.raises(Invalid, match="log_bin=ON") as refused:
        await service.run_backup(kit=kit, db=context.db, kind="incremental")
    assert "binlog_format=ROW" in refused.value.message
