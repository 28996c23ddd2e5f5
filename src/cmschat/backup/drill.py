"""Restore drills: prove the newest backup restorable, and measure RTO and RPO.

The drill restores into a scratch database (a file for SQLite, a new database on the
same MariaDB server) and a scratch file store, then checks what came back against the
manifest: row counts, the audit hash chain and its head, file checksums (during the
restore), the tables' own check, and that migrations run. RTO is the measured time of
all that; RPO is the age of the restored data when the drill ran. On MariaDB with
incremental backups the newest backup is an incremental: the drill restores its chain
(the full backup, then the binary logs renamed into the scratch database). A physical
(``mariadb-backup``) full backup is prepared and served by a scratch ``mariadbd`` of its
own instead of a scratch database (``physical_backup.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.attachments.storage import LocalStorage, Storage
from cmschat.attachments.storage.base import in_thread
from cmschat.audit import chain
from cmschat.audit.service import audited
from cmschat.backup import metrics
from cmschat.backup.engines import Engine, check_tables, collect_facts
from cmschat.backup.manifest import Manifest
from cmschat.backup.physical import ARTIFACT as PHYSICAL_ARTIFACT
from cmschat.backup.restore import restore_into
from cmschat.backup.service import DRILLS, Toolkit, load_manifest, newest, record, staging
from cmschat.clock import Clock
from cmschat.db.actors import SYSTEM_BACKUP
from cmschat.db.migrate import run_migrations
from cmschat.db.session import Database, create_engine
from cmschat.errors import CmschatError


@dataclass(frozen=True)
class Check:
    """One thing the drill checked."""

    name: str
    ok: bool
    detail: str


@dataclass
class DrillReport:
    """A drill's outcome, as stored in the target and shown in the console."""

    backup_id: str
    ran_at: datetime
    rto_seconds: float
    rpo_seconds: float
    rto_target_seconds: int
    rpo_target_seconds: int
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return all(check.ok for check in self.checks)

    def as_json(self) -> dict[str, object]:
        """The report as JSON-ready data."""
        body = asdict(self)
        body["ran_at"] = self.ran_at.astimezone(UTC).isoformat()
        body["ok"] = self.ok
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DrillReport:
        """The report ``as_json`` gave."""
        fields = {k: v for k, v in body.items() if k not in ("ok", "checks", "ran_at")}
        return cls(
            **fields,
            ran_at=datetime.fromisoformat(body["ran_at"]),
            checks=[Check(**check) for check in body["checks"]],
        )


async def _check_restored(
    engine: Engine, manifest: Manifest, checks: list[Check], clock: Clock
) -> None:
    restored = create_engine(engine.url)
    try:
        async with restored.connect() as connection:
            facts = await connection.run_sync(collect_facts)
            problems = await connection.run_sync(check_tables)
        wrong = {
            table: (facts.row_counts.get(table), count)
            for table, count in manifest.row_counts.items()
            if facts.row_counts.get(table) != count
        }
        checks.append(
            Check(
                "row counts",
                bool(manifest.row_counts) and not wrong,
                "the manifest records no row counts"
                if not manifest.row_counts
                else f"{len(manifest.row_counts)} tables match the manifest"
                if not wrong
                else "; ".join(
                    f"{t}: {got} restored, {want} in the manifest"
                    for t, (got, want) in sorted(wrong.items())
                ),
            )
        )
        checks.append(Check("table check", not problems, "; ".join(problems) or "no problems"))
        db = audited(Database(restored, clock))
        async with db.unit_of_work(SYSTEM_BACKUP) as session:
            verdict = await chain.verify(session)
        head_ok = manifest.audit_head is None or (
            (verdict.head_id, verdict.head_hash) == tuple(manifest.audit_head)
        )
        checks.append(
            Check(
                "audit chain",
                verdict.ok and head_ok,
                verdict.describe() if head_ok else "the restored head differs from the manifest",
            )
        )
        await run_migrations(restored)
        checks.append(Check("migrations", True, "the restored copy migrates to this version"))
    finally:
        await restored.dispose()


async def _replay(kit: Toolkit, chain: list[Manifest], engine: Engine, store: Storage) -> int:
    from cmschat.backup.incremental import replay_chain
    from cmschat.backup.mariadb import MariadbEngine

    assert isinstance(engine, MariadbEngine)  # noqa: S101 - chains exist on MariaDB only
    return await replay_chain(kit=kit, chain=chain, until=None, into=(engine, store))


def _restored(chain: list[Manifest], files: int) -> str:
    if len(chain) == 1:
        return f"database and {files} files, checksums match"
    return (
        f"full backup {chain[0].id} and {len(chain) - 1} incremental(s) to {chain[-1].id}, "
        f"{files} files, checksums match"
    )


async def run_drill(
    *,
    kit: Toolkit,
    db: Database,
    backup_id: str | None = None,
    session: AsyncSession | None = None,
) -> DrillReport:
    """Drill a backup (the newest by default) in this process, count and audit it.

    A serving instance runs ``child.drill_in_child`` instead (a low-priority process).
    """
    report = await drill_backup(kit=kit, backup_id=backup_id)
    await announce_drill(db=db, report=report, session=session)
    return report


async def announce_drill(
    *,
    db: Database,
    report: DrillReport,
    session: AsyncSession | None = None,
    process: dict[str, Any] | None = None,
) -> None:
    """Set the drill metrics and audit the drill (``process``: the child that ran it)."""
    metrics.drill_done(ok=report.ok, rto_seconds=report.rto_seconds, rpo_seconds=report.rpo_seconds)
    await record(
        db,
        action="backup.drill",
        target_id=report.backup_id,
        changes={
            "ok": report.ok,
            "rto_seconds": report.rto_seconds,
            "rpo_seconds": report.rpo_seconds,
            "failed": [check.name for check in report.checks if not check.ok],
            **({"process": process} if process else {}),
        },
        session=session,
    )


async def _drill_logical(
    kit: Toolkit, chain: list[Manifest], manifest: Manifest, scratch: Path, checks: list[Check]
) -> None:
    engine = await in_thread(kit.engine.scratch, scratch)
    try:
        store = LocalStorage(scratch / "files")
        try:
            files = await restore_into(
                kit=kit, manifest=chain[0], engine=engine, storage=store, force=True
            )
            if len(chain) > 1:
                files += await _replay(kit, chain[1:], engine, store)
            checks.append(Check("restore", True, _restored(chain, files)))
            await _check_restored(engine, manifest, checks, kit.clock)
        except CmschatError as exc:
            checks.append(Check("restore", False, exc.message))
    finally:
        await in_thread(engine.drop)


async def _drill_physical(
    kit: Toolkit, chain: list[Manifest], manifest: Manifest, scratch: Path, checks: list[Check]
) -> None:
    # A physical copy is served by a scratch mariadbd of its own (physical_backup.py).
    from cmschat.backup.physical_backup import drilled

    store = LocalStorage(scratch / "files")
    try:
        async with drilled(kit=kit, chain=chain, scratch=scratch, store=store) as (engine, files):
            checks.append(Check("restore", True, _restored(chain, files)))
            await _check_restored(engine, manifest, checks, kit.clock)
    except CmschatError as exc:
        checks.append(Check("restore", False, exc.message))


async def drill_backup(*, kit: Toolkit, backup_id: str | None = None) -> DrillReport:
    """Restore a backup (the newest by default) into scratch space, check it, store the report.

    An incremental (the newest is one, on MariaDB with binary logging) restores its
    chain: its full backup, then each incremental up to it replayed into the scratch
    database, checked against the newest manifest; the RPO is that backup's age.
    """
    from cmschat.backup.incremental import chain_of

    manifest = (
        await load_manifest(kit=kit, backup_id=backup_id) if backup_id else await newest(kit=kit)
    )
    chain = await chain_of(kit=kit, manifest=manifest)
    ran_at = kit.clock.now()
    checks: list[Check] = []
    started = time.monotonic()
    with staging(kit.settings) as scratch:
        if chain[0].artifact(PHYSICAL_ARTIFACT) is not None:
            await _drill_physical(kit, chain, manifest, scratch, checks)
        else:
            await _drill_logical(kit, chain, manifest, scratch, checks)
    settings = kit.settings.backup
    report = DrillReport(
        backup_id=manifest.id,
        ran_at=ran_at,
        rto_seconds=round(time.monotonic() - started, 3),
        rpo_seconds=round((ran_at - manifest.created_at).total_seconds(), 3),
        rto_target_seconds=settings.rto_target_seconds,
        rpo_target_seconds=settings.rpo_target_seconds,
        checks=checks,
    )
    report.checks.append(
        Check(
            "RTO",
            report.rto_seconds <= settings.rto_target_seconds,
            f"{report.rto_seconds:.1f} s (target {settings.rto_target_seconds} s)",
        )
    )
    report.checks.append(
        Check(
            "RPO",
            report.rpo_seconds <= settings.rpo_target_seconds,
            f"{report.rpo_seconds:.0f} s (target {settings.rpo_target_seconds} s)",
        )
    )
    name = f"{DRILLS}/{ran_at.astimezone(UTC):%Y%m%dT%H%M%SZ}.json"
    await in_thread(kit.target.put_text, name, json.dumps(report.as_json(), indent=2) + "\n")
    return report


async def last_drill(*, kit: Toolkit) -> dict[str, object] | None:
    """The newest stored drill report, or None."""

    def read() -> dict[str, object] | None:
        names = kit.target.names(DRILLS)
        if not names:
            return None
        text = kit.target.get_text(max(names))
        return None if text is None else dict(json.loads(text))

    return await in_thread(read)
