"""Backup metrics come from the target, whoever ran the backup and whenever."""

from __future__ import annotations

from prometheus_client import REGISTRY

from cmschat.backup import metrics, service
from cmschat.backup.drill import run_drill
from cmschat.backup.exporter import export_backup_metrics
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.backup.conftest import Chat


def gauge(name: str, **labels: str) -> float | None:
    """The value /metrics would show, or None when the series is absent."""
    return REGISTRY.get_sample_value(name, labels)


def forget_everything() -> None:
    """What a freshly started instance knows: nothing."""
    for family in (metrics.LAST_SUCCESS, metrics.SIZE, metrics.DURATION):
        family.clear()
    for single in (metrics.DRILL_SUCCESS, metrics.DRILL_RTO, metrics.DRILL_RPO):
        single.set(-1)


async def test_an_empty_target_says_no_full_backup_ever(kit: service.Toolkit) -> None:
    forget_everything()
    await export_backup_metrics(kit=kit)
    # 0 = the epoch: the "no successful backup for 26 h" alert fires until one exists.
    assert gauge("cmschat_backup_last_success_timestamp_seconds", kind="full") == 0
    assert gauge("cmschat_backup_last_success_timestamp_seconds", kind="incremental") is None
    assert gauge("cmschat_backup_drill_success") == -1  # no drill report: left alone


async def test_an_instance_that_ran_nothing_exports_the_newest_backup_and_drill(
    context: AppContext, chat: Chat, kit: service.Toolkit, clock: FakeClock
) -> None:
    await chat.say(2)
    older, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(hours=1)
    newer, _ = await service.run_backup(kit=kit, db=context.db, kind="full")
    clock.advance(hours=2)
    report = await run_drill(kit=kit, db=context.db)
    forget_everything()  # as if the backups and the drill ran in cron, not here

    await export_backup_metrics(kit=kit)

    assert older.created_at < newer.created_at
    assert gauge("cmschat_backup_last_success_timestamp_seconds", kind="full") == (
        newer.created_at.timestamp()
    )
    assert gauge("cmschat_backup_size_bytes", kind="full") == newer.size
    assert gauge("cmschat_backup_drill_success") == (1 if report.ok else 0) == 1
    assert gauge("cmschat_backup_drill_rpo_seconds") == report.rpo_seconds == 2 * 3600
