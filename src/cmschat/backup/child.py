"""A serving instance's backups and drills run in a child process at the lowest priority.

Compressing and encrypting a dump takes a core for minutes; inside the server it would
also hold the GIL against the event loop. The scheduler and the console therefore start
``python -m cmschat backup child`` with the instance's settings, and wait on it without
blocking. The child lowers its CPU priority (``CMSCHAT_BACKUP__NICE``, 19 by default)
and its I/O priority (the idle class, where the kernel's I/O scheduler honours it)
before any work; ``mariadb-dump``,
``mariadb-binlog`` and ``mariadb`` inherit both. The child writes the backup or the drill
report into the target and hands the result back in a private file; the instance then
sets its metrics and writes the audit event (as the admin who asked, or the system), so
leader, audit and metrics work as before. A failure comes back as the same error.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import platform
import subprocess
import sys
from datetime import date, time
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat import errors
from cmschat.audit.service import audited
from cmschat.backup.drill import DrillReport, announce_drill, drill_backup
from cmschat.backup.keys import Recipients
from cmschat.backup.manifest import Manifest
from cmschat.backup.mariadb import last_line
from cmschat.backup.service import Made, Toolkit, announce, make_backup, staging
from cmschat.db.session import Database
from cmschat.settings import Settings

_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}  # ioprio_set, ioprio_get
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13


def lower_priority(nice: int) -> dict[str, Any]:
    """Yield the CPU and the disk to everything else; what this process got."""
    os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    return {"pid": os.getpid(), "nice": os.getpriority(os.PRIO_PROCESS, 0), "io": _idle_io()}


def _idle_io() -> str:
    numbers = _IOPRIO_SYSCALLS.get(platform.machine())
    if numbers is None or not sys.platform.startswith("linux"):
        return "unchanged"
    libc = ctypes.CDLL(None, use_errno=True)
    idle = _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT
    if libc.syscall(numbers[0], _IOPRIO_WHO_PROCESS, 0, idle) != 0:
        return "unchanged"
    got = int(libc.syscall(numbers[1], _IOPRIO_WHO_PROCESS, 0))
    return "idle" if got >= 0 and got >> _IOPRIO_CLASS_SHIFT == _IOPRIO_CLASS_IDLE else "unchanged"


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path | date | time):
        return str(value) if isinstance(value, Path) else value.isoformat()
    return value


def settings_payload(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data, secrets included (for a private file only)."""
    payload: dict[str, Any] = _plain(settings)
    return payload


async def _spawn(settings: Settings, job: list[str]) -> dict[str, Any]:
    with staging(settings) as scratch:  # 0700: the settings file holds secrets
        settings_file, result_file = scratch / "settings.json", scratch / "result.json"
        fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(settings_payload(settings), file)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cmschat",
            "backup",
            "child",
            *job,
            f"--settings-file={settings_file}",
            f"--result-file={result_file}",
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _, said = await process.communicate()
        except asyncio.CancelledError:
            # The instance is stopping: the backup stops with it (and stays incomplete).
            process.terminate()
            await process.wait()
            raise
        # The child's log lines join this instance's log.
        sys.stderr.write(said.decode(errors="replace"))
        if not result_file.is_file():
            raise errors.CmschatError(
                f"backup: the {job[0]} process failed (status {process.returncode}): "
                + last_line(said.decode(errors="replace")).removeprefix("cmschat: ")
            )
        result: dict[str, Any] = json.loads(result_file.read_text())
    if "error" in result:
        kind = getattr(errors, str(result["error"]), errors.CmschatError)
        if not (isinstance(kind, type) and issubclass(kind, errors.CmschatError)):
            kind = errors.CmschatError
        raise kind(str(result["message"]))
    return result


async def backup_in_child(
    *, kit: Toolkit, db: Database, kind: str, session: AsyncSession | None = None
) -> tuple[Manifest, Recipients]:
    """Make a backup in a low-priority child process, then count and audit it here."""
    result = await _spawn(kit.settings, ["backup", f"--kind={kind}"])
    generated = result["generated"]
    made = Made(
        Manifest.from_json(result["manifest"]),
        Recipients(list(result["recipients"]), Path(generated) if generated else None),
        {**result["changes"], "process": result["process"]},
    )
    await announce(db=db, made=made, session=session)
    return made.manifest, made.recipients


async def drill_in_child(
    *, kit: Toolkit, db: Database, session: AsyncSession | None = None
) -> DrillReport:
    """Drill the newest backup in a low-priority child process, then count and audit it."""
    result = await _spawn(kit.settings, ["drill"])
    report = DrillReport.from_json(result["report"])
    await announce_drill(db=db, report=report, session=session, process=result["process"])
    return report


async def child_main(job: str, kind: str, settings: Settings, result_file: Path) -> None:
    """The child's side: lower the priority, do the job, write the result file."""
    from cmschat.attachments.storage import storage_for
    from cmschat.backup.service import engine_for, target_for
    from cmschat.clock import SystemClock
    from cmschat.db.session import create_engine

    process = lower_priority(settings.backup.nice)
    clock = SystemClock()
    kit = Toolkit(
        settings, target_for(settings), engine_for(settings), storage_for(settings), clock
    )
    result: dict[str, Any]
    try:
        if job == "drill":
            report = await drill_backup(kit=kit)
            result = {"report": report.as_json()}
        else:
            engine = create_engine(settings.database_url)
            try:
                made = await make_backup(kit=kit, db=audited(Database(engine, clock)), kind=kind)
            finally:
                await engine.dispose()
            generated = made.recipients.generated
            result = {
                "manifest": made.manifest.to_json(),
                "recipients": made.recipients.keys,
                "generated": str(generated) if generated else None,
                "changes": made.changes,
            }
    except errors.CmschatError as exc:
        result = {"error": type(exc).__name__, "message": exc.message}
    result["process"] = process
    fd = os.open(result_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(result, file)
