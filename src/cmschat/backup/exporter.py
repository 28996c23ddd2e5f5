"""The backup metrics every instance exports, read from the backup target itself.

A backup or drill may run in another instance, in ``cmschat backup`` from cron, or before
this process started; the target is the one place that knows. So each instance reads the
newest complete backup of each kind and the newest drill report from there, and the
alert "no successful backup for 26 h" holds whoever ran the backups. With no complete full
backup at all, the timestamp is 0: that alert fires until the first one exists.
"""

from __future__ import annotations

from cmschat.attachments.storage.base import in_thread
from cmschat.backup import metrics
from cmschat.backup.drill import last_drill
from cmschat.backup.manifest import MANIFEST_NAME, Manifest, check_id
from cmschat.backup.service import Toolkit
from cmschat.backup.targets import Target
from cmschat.errors import Invalid

KINDS = ("full", "incremental")


def _newest_by_kind(target: Target) -> dict[str, Manifest]:
    # Ids sort by time, so reading stops at the newest complete backup of each kind
    # instead of fetching every manifest (hundreds on S3 with hourly incrementals).
    found: dict[str, Manifest] = {}
    for folder in sorted(target.folders(), reverse=True):
        try:
            kind = check_id(folder).rsplit("-", 1)[1]
        except Invalid:
            continue
        if kind in found:
            continue
        text = target.get_text(f"{folder}/{MANIFEST_NAME}")
        if text is not None:
            found[kind] = Manifest.from_json(text)
        if len(found) == len(KINDS):
            break
    return found


async def export_backup_metrics(*, kit: Toolkit) -> None:
    """Set the backup and drill gauges from what the target holds now."""
    newest = await in_thread(_newest_by_kind, kit.target)
    for kind in KINDS:
        if kind in newest:
            metrics.backup_done(newest[kind])
        elif kind == "full":
            metrics.LAST_SUCCESS.labels(kind).set(0)
    report = await last_drill(kit=kit)
    if report is not None:
        metrics.drill_done(
            ok=bool(report.get("ok")),
            rto_seconds=float(str(report.get("rto_seconds", 0))),
            rpo_seconds=float(str(report.get("rpo_seconds", 0))),
        )
