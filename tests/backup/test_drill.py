"""Restore drills: restore into scratch space, check, measure RTO and RPO."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import REGISTRY

from cmschat.backup import service
from cmschat.backup.drill import last_drill, run_drill
from cmschat.backup.manifest import Manifest
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.backup.conftest import Chat
from tests.support import audit_events


async def test_a_drill_restores_checks_and_reports_rto_and_rpo(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock
) -> None:
    await chat.say(4)
    await chat.send_file("a")
    manifest, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(hours=3)

    report = await run_drill(kit=kit, db=context.db)

    assert report.ok, report.checks
    assert report.backup_id == manifest.id
    assert {c.name for c in report.checks} >= {
        "restore",
        "row counts",
        "table check",
        "audit chain",
        "migrations",
        "RTO",
        "RPO",
    }
    assert report.rpo_seconds == 3 * 3600
    assert 0 < report.rto_seconds < 60
    assert REGISTRY.get_sample_value("cmschat_backup_drill_success") == 1
    assert REGISTRY.get_sample_value("cmschat_backup_drill_rpo_seconds") == 3 * 3600
    assert (
        REGISTRY.get_sample_value("cmschat_backup_last_success_timestamp_seconds", {"kind": "full"})
        == manifest.created_at.timestamp()
    )
    (event,) = await audit_events(context.db, action="backup.drill")
    assert json.loads(event.changes)["ok"] is True
    stored = await last_drill(kit=kit)
    assert stored is not None and stored["backup_id"] == manifest.id and stored["ok"] is True
    # The scratch copy is gone.
    assert not [p for p in context.settings.data_dir.iterdir() if p.name.startswith(".backup-")]


async def test_a_drill_fails_on_wrong_counts_and_a_stale_backup(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock
) -> None:
    await chat.say(2)
    manifest, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    # The manifest promises one more message than the backup holds.
    path = Path(context.settings.backup.url.removeprefix("file://")) / manifest.id / "manifest.json"
    changed = Manifest.from_json(path.read_text())
    changed.row_counts["messages"] += 1
    path.write_text(changed.to_json())
    clock.advance(hours=25)

    report = await run_drill(kit=kit, db=context.db)

    failed = {check.name for check in report.checks if not check.ok}
    assert failed == {"row counts", "RPO"}, report.checks
    assert REGISTRY.get_sample_value("cmschat_backup_drill_success") == 0
