"""Prometheus metrics of backups and drills (in the default registry, served at /metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Gauge

if TYPE_CHECKING:
    from cmschat.backup.manifest import Manifest

# Several workers: whichever ran the job last set the value; a pid label would split the
# series (and keep a dead worker's), so each reports the most recent value.
LAST_SUCCESS = Gauge(
    "cmschat_backup_last_success_timestamp_seconds",
    "When the last successful backup of each kind started (Unix time).",
    ["kind"],
    multiprocess_mode="mostrecent",
)
SIZE = Gauge(
    "cmschat_backup_size_bytes",
    "Bytes stored by the last successful backup.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
DURATION = Gauge(
    "cmschat_backup_duration_seconds",
    "How long the last successful backup took.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
DRILL_SUCCESS = Gauge(
    "cmschat_backup_drill_success",
    "1 if the last restore drill passed every check, else 0.",
    multiprocess_mode="mostrecent",
)
DRILL_RTO = Gauge(
    "cmschat_backup_drill_rto_seconds",
    "Restore time measured by the last restore drill.",
    multiprocess_mode="mostrecent",
)
DRILL_RPO = Gauge(
    "cmschat_backup_drill_rpo_seconds",
    "Age of the newest restored data when the last restore drill ran.",
    multiprocess_mode="mostrecent",
)


def backup_done(manifest: Manifest) -> None:
    """Record a successful backup."""
    LAST_SUCCESS.labels(manifest.kind).set(manifest.created_at.timestamp())
    SIZE.labels(manifest.kind).set(manifest.size)
    DURATION.labels(manifest.kind).set(manifest.duration_seconds)


def drill_done(*, ok: bool, rto_seconds: float, rpo_seconds: float) -> None:
    """Record a drill's outcome."""
    DRILL_SUCCESS.set(1 if ok else 0)
    DRILL_RTO.set(rto_seconds)
    DRILL_RPO.set(rpo_seconds)
