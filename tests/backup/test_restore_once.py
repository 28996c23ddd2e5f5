"""A chain restore decrypts each artifact once; a physical one is audited at its end."""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import sys
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import cmschat.backup
from cmschat.audit import chain as audit_chain
from cmschat.backup import crypto, service
from cmschat.backup.manifest import Manifest
from cmschat.backup.physical import scratch_server
from cmschat.backup.physical_backup import FINISHED, finish_restore
from cmschat.backup.restore import restore_backup
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.session import create_engine
from cmschat.errors import CmschatError
from tests.backup.binlog_server import binlog_server, database_url  # noqa: F401 - fixtures
from tests.backup.conftest import Chat
from tests.backup.test_physical import physical, served_kit  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """Every decryption of a stored artifact from now on, by name and checksum."""
    seen: Counter[tuple[str, str]] = Counter()
    real = crypto.open_sealed

    def counting(source: Any, target: Any, key: Any, *, name: str, expected: Any = None) -> Any:
        seen[(name, expected.sha256 if expected is not None else "")] += 1
        return real(source, target, key, name=name, expected=expected)

    for found in pkgutil.iter_modules(cmschat.backup.__path__, "cmschat.backup."):
        importlib.import_module(found.name)  # a module imported later would not count
    for module in list(sys.modules.values()):
        if module.__name__.startswith("cmschat.") and getattr(module, "open_sealed", None) is real:
            monkeypatch.setattr(module, "open_sealed", counting)
    return seen


async def _chain(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock
) -> list[Manifest]:
    """A full backup and two incrementals, each with messages and a file of its own."""
    made = []
    for number, kind in enumerate(("full", "incremental", "incremental")):
        await chat.say(2, prefix=f"before backup {number}")
        await chat.send_file(f"file {number}")
        manifest, _ = await service.run_backup(kit=kit, db=context.db, kind=kind)
        assert manifest.kind == kind
        made.append(manifest)
        clock.advance(minutes=10)
    return made


def _artifacts(chain: list[Manifest]) -> Counter[tuple[str, str]]:
    return Counter((a.name, a.sha256) for manifest in chain for a in manifest.artifacts)


async def _restore_events(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT changes FROM audit_events WHERE action = 'backup.restore'")
            )
            return [json.loads(row[0]) if isinstance(row[0], str) else row[0] for row in rows]
    finally:
        await engine.dispose()


async def _verified(url: str) -> bool:
    engine = create_engine(url)
    try:
        async with AsyncSession(engine) as session:
            return (await audit_chain.verify(session)).ok
    finally:
        await engine.dispose()


async def test_a_dump_chain_restore_decrypts_each_artifact_once(
    context: AppContext,
    chat: Chat,
    kit: service.Toolkit,
    clock: FakeClock,
    decryptions: Counter[tuple[str, str]],
) -> None:
    chain = await _chain(context, chat, kit, clock)
    decryptions.clear()
    await restore_backup(kit=kit, backup_id=chain[-1].id, force=True)
    assert decryptions == _artifacts(chain)
    (event,) = await _restore_events(context.settings.database_url)
    assert event["reached"]["backup"] == chain[-1].id
    assert event["operator"]
    assert not list(context.settings.data_dir.glob(".backup-*"))


async def test_a_physical_chain_restore_decrypts_once_and_is_audited_after_its_last_log(
    context: AppContext,
    chat: Chat,
    physical: service.Toolkit,  # noqa: F811 - fixture
    clock: FakeClock,
    decryptions: Counter[tuple[str, str]],
) -> None:
    chain = await _chain(context, chat, physical, clock)
    decryptions.clear()
    restored = await restore_backup(kit=physical, backup_id=chain[-1].id, force=False)
    assert decryptions == _artifacts(chain)
    prepared = context.settings.data_dir / f"restore-{chain[0].id}"
    assert restored.steps[5] == f"cmschat backup finish-restore {prepared}"
    assert not list(context.settings.data_dir.glob(".backup-*"))
    spare = prepared.parent / "spare-copy"
    shutil.copytree(prepared / "data", spare)

    # The last log fails: the logs before it went in, but the restore did not end.
    last = prepared / "replay" / f"02-{chain[2].id}.sql"
    whole = last.read_bytes()
    last.write_bytes(b"THIS IS NOT SQL;\n" + whole)
    url = context.settings.database_url
    with scratch_server(prepared / "data", url) as served:
        with pytest.raises(CmschatError, match="replaying the binary log"):
            await finish_restore(kit=served_kit(physical, served), directory=prepared)
        assert await _restore_events(served) == []
        assert await _verified(served)
    assert not (prepared / FINISHED).exists()

    # From a fresh copy-back, every log goes in and then the event, continuing the chain.
    last.write_bytes(whole)
    shutil.rmtree(prepared / "data")
    spare.rename(prepared / "data")
    with scratch_server(prepared / "data", url) as served:
        await finish_restore(kit=served_kit(physical, served), directory=prepared)
        (event,) = await _restore_events(served)
        assert await _verified(served)
        with pytest.raises(CmschatError, match="finished already"):
            await finish_restore(kit=served_kit(physical, served), directory=prepared)
    assert event["physical"] is True and event["chain"] == [m.id for m in chain]
    binlog = chain[-1].binlog or {}
    assert event["reached"] == {
        "backup": chain[-1].id,
        "until": None,
        "binlog": {"file": binlog["file"], "position": binlog["position"]},
    }
    assert "@" in event["operator"]
