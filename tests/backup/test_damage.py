"""A wrong key, a truncated file or one flipped byte stops verify and restore, cleanly."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from cmschat.attachments.storage.base import in_thread
from cmschat.backup import service
from cmschat.backup.crypto import IDENTITY_NAME, BackupCorrupt
from cmschat.backup.restore import restore_backup, verify_backup
from cmschat.context import AppContext
from tests.backup.conftest import Chat, sqlite_only


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 17])


@pytest.mark.parametrize(
    ("damage", "needle"),
    [(_flip, "damaged or truncated"), (_truncate, "damaged or truncated"), (None, "wrong key")],
)
async def test_damage_stops_verify_and_restore_with_one_clear_line(
    context: AppContext,
    chat: Chat,
    kit: service.Toolkit,
    elsewhere: service.Toolkit,
    damage: object,
    needle: str,
) -> None:
    await chat.say(3)
    await chat.send_file("x")
    manifest, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    stored = Path(context.settings.backup.url.removeprefix("file://")) / manifest.id
    key = context.settings.data_dir / IDENTITY_NAME
    secret = key.read_text()
    if callable(damage):
        damage(stored / kit.engine.artifact)
    else:
        key.write_text(f"{pyrage.x25519.Identity.generate()}\n")

    with pytest.raises(BackupCorrupt) as verified:
        await verify_backup(kit=kit, backup_id=manifest.id)
    message = verified.value.message
    assert needle in message and "\n" not in message
    assert "AGE-SECRET-KEY" not in message and secret.split()[-1] not in message

    # Restoring elsewhere fails the same way and leaves an empty database behind.
    with pytest.raises(BackupCorrupt, match=needle):
        await restore_backup(kit=elsewhere, backup_id=manifest.id, force=False)
    assert not await in_thread(elsewhere.engine.in_use)
    assert not [p for p in elsewhere.settings.data_dir.glob(".*")]


@sqlite_only()
async def test_a_damaged_file_archive_leaves_the_old_database_in_place(
    context: AppContext, chat: Chat, kit: service.Toolkit
) -> None:
    await chat.send_file("y")
    manifest, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    stored = Path(context.settings.backup.url.removeprefix("file://")) / manifest.id
    _flip(stored / "files.tar.zst.age")
    database = Path(context.settings.database_url.removeprefix("sqlite+aiosqlite:///"))
    before = _read(database)
    with pytest.raises(BackupCorrupt, match=r"files\.tar\.zst\.age"):
        await restore_backup(kit=kit, backup_id=manifest.id, force=True)
    assert _read(database) == before
