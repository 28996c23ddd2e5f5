"""The keep policy: young backups stay, and so do the newest full and the chain it starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cmschat.backup import service
from cmschat.backup.manifest import Manifest


def _listed(stamp: datetime, kind: str, base: str | None = None) -> service.Listed:
    from cmschat.backup.manifest import new_id

    backup_id = new_id(stamp, kind)
    manifest = Manifest(
        id=backup_id,
        kind=kind,
        created_at=stamp,
        cmschat_version="x",
        database_kind="mariadb",
        alembic_revision=None,
        base_id=base,
    )
    return service.Listed(backup_id, manifest)


def test_prune_keeps_young_backups_the_newest_full_and_its_chain() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    old_full = _listed(now - timedelta(days=40), "full")
    newest_full = _listed(now - timedelta(days=20), "full")
    chained = _listed(now - timedelta(days=19), "incremental", newest_full.id)
    chained2 = _listed(now - timedelta(days=18), "incremental", chained.id)
    old_incr = _listed(now - timedelta(days=39), "incremental", old_full.id)
    young = _listed(now - timedelta(days=2), "full")
    young_incr = _listed(now - timedelta(days=1), "incremental", young.id)
    stale_broken = service.Listed("20260101T000000Z-full", None)
    backups = [old_full, newest_full, chained, chained2, old_incr, young, young_incr, stale_broken]
    # young is the newest full: newest_full and its chain are past keep_days -> removed.
    dropped = service.chosen_for_prune(backups, now=now, keep_days=14)
    assert set(dropped) == {
        old_full.id,
        newest_full.id,
        chained.id,
        chained2.id,
        old_incr.id,
        stale_broken.id,
    }
    # With no young full, the newest full and the incrementals after it stay.
    dropped = service.chosen_for_prune(backups[:5], now=now, keep_days=14)
    assert set(dropped) == {old_full.id, old_incr.id}
