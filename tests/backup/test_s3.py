"""Backups to and from S3-compatible storage (moto in server mode)."""

from __future__ import annotations

import secrets

from cmschat.backup import service
from cmschat.backup.drill import last_drill, run_drill
from cmschat.backup.restore import restore_backup, verify_backup
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.backup.conftest import Chat, snapshot_files, snapshot_rows, sqlite_only, toolkit
from tests.s3server import BUCKET, S3Server


@sqlite_only()
async def test_backup_to_s3_lists_verifies_drills_and_restores(
    context: AppContext,
    chat: Chat,
    clock: FakeClock,
    s3_server: S3Server,
    elsewhere: service.Toolkit,
) -> None:
    prefix = f"backups-{secrets.token_hex(4)}"
    on_s3 = s3_server.settings_for(context.settings, "unused")
    on_s3.backup = on_s3.backup.model_copy(update={"url": f"s3://{BUCKET}/{prefix}"})
    kit = toolkit(on_s3, context.storage, clock)
    await chat.say(3)
    await chat.send_file("s3")
    rows = await snapshot_rows(context.settings.database_url)
    files = await snapshot_files(context.settings.database_url, context.storage)

    manifest, _ = await service.run_backup(kit=kit, db=context.db, kind="full")

    stored = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    names = {obj["Key"].removeprefix(f"{prefix}/") for obj in stored}
    assert names == {
        f"{manifest.id}/manifest.json",
        f"{manifest.id}/database.sqlite.zst.age",
        f"{manifest.id}/files.tar.zst.age",
    }
    for obj in stored:
        body = s3_server.client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        assert b"%PDF" not in body
    (listed,) = await service.list_backups(kit=kit)
    assert listed.id == manifest.id and listed.status == "complete"
    await verify_backup(kit=kit, backup_id=manifest.id)
    report = await run_drill(kit=kit, db=context.db)
    assert report.ok, report.checks
    assert (await last_drill(kit=kit) or {})["backup_id"] == manifest.id

    other_settings = elsewhere.settings.model_copy(update={"backup": on_s3.backup})
    other_settings.backup = other_settings.backup.model_copy(
        update={"identity_file": elsewhere.settings.backup.identity_file}
    )
    other = toolkit(s3_server.settings_for(other_settings, "unused"), elsewhere.storage, clock)
    await restore_backup(kit=other, backup_id=manifest.id, force=False)
    after = await snapshot_rows(other_settings.database_url)
    after.pop("audit_events")
    rows.pop("audit_events")
    assert after == rows
    assert await snapshot_files(other_settings.database_url, elsewhere.storage) == files
