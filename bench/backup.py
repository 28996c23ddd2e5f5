"""Full backup, restore and drill times, and the backup's effect on send latency.

Seeds a room with M messages (rows inserted directly, as ``history.py`` does) and
uploads F files of S MiB over HTTP, then: measures the senders' latency for a baseline,
runs a full backup the way a server does (``backup_in_child``: a child process at nice
19 and idle I/O priority) against the live server's database while the senders keep
posting (in this process, so the backup must not take their GIL either), runs a drill
(restore into scratch space plus every check: the RTO), and restores into an empty
database elsewhere.

Run::

    .venv/bin/python bench/backup.py --db sqlite --messages 1000000 --files 16 --file-mib 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import common
import history
from retention_purge import measure_senders


def _pdf(size: int, tag: int) -> bytes:
    head = b"%PDF-1.7\n%" + str(tag).encode() + b"\n"
    return head + os.urandom(size - len(head))


async def upload(api: common.Api, user: common.BenchUser, room: int, size: int, tag: int) -> None:
    """One file, sent in a message."""
    files = {"file": (f"f{tag}.pdf", _pdf(size, tag), "application/pdf")}
    response = await api.client.post(
        f"{api.base}/rooms/{room}/attachments", files=files, headers=user.headers
    )
    response.raise_for_status()
    sent = await api.client.post(
        f"{api.base}/rooms/{room}/messages",
        json={"content": f"file {tag}", "attachment_ids": [response.json()["id"]]},
        headers=user.headers,
    )
    sent.raise_for_status()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from cmschat.attachments.storage import LocalStorage, storage_from_url
    from cmschat.audit.service import audited
    from cmschat.backup import service
    from cmschat.backup.child import backup_in_child
    from cmschat.backup.crypto import generate_identity
    from cmschat.backup.drill import run_drill
    from cmschat.backup.restore import restore_backup
    from cmschat.clock import SystemClock
    from cmschat.db.session import Database, create_engine
    from cmschat.settings import BackupSettings, Settings

    result: dict[str, Any] = {
        "tool": "backup",
        "db": args.db,
        "messages": args.messages,
        "files": args.files,
        "file_mib": args.file_mib,
        "machine": common.machine(),
        "source": common.source_state(),
    }
    extra = {"CMSCHAT_ATTACHMENTS__QUOTA_MIB": str(args.files * args.file_mib + 64)}
    async with common.environment(args.db, extra_env=extra) as (backend, _servers, api):
        users = await api.create_users(8, prefix="b")
        room = await api.create_room(users[0], users, "archive")
        live = await api.create_room(users[0], users, "live")
        result["seed_seconds"] = await history.seed(
            backend.database_url,
            room_id=room,
            author_id=users[0].id,
            count=args.messages,
            batch=10_000,
        )
        started = time.monotonic()
        for tag in range(args.files):
            await upload(api, users[0], room, args.file_mib << 20, tag)
        result["upload_seconds"] = time.monotonic() - started

        data_dir = backend.workdir / "var"
        key = data_dir / "bench-backup-key.txt"
        public = generate_identity(key)
        settings = Settings(
            database_url=backend.database_url,
            data_dir=data_dir,
            secret_key=backend.secret_key,
            environment="test",
            backup=BackupSettings(recipients=[public], identity_file=key, schedule=False),
            _env_file=None,  # type: ignore[call-arg]
        )
        clock = SystemClock()
        kit = service.Toolkit(
            settings=settings,
            target=service.target_for(settings),
            engine=service.engine_for(settings),
            storage=storage_from_url(settings.storage_url),
            clock=clock,
        )
        db = audited(Database(create_engine(backend.database_url), clock))

        async def idle() -> None:
            await asyncio.sleep(args.baseline)

        async def backup() -> Any:
            return await backup_in_child(kit=kit, db=db, kind="full")

        try:
            baseline, _ = await measure_senders(api, live, users, idle)
            during, (manifest, _) = await measure_senders(api, live, users, backup)
            started = time.monotonic()
            report = await run_drill(kit=kit, db=db)
            drill_seconds = time.monotonic() - started
        finally:
            await db.dispose()
        if not report.ok:
            raise RuntimeError(f"drill failed: {report.checks}")

        elsewhere = backend.workdir / "elsewhere"
        if args.db == "sqlite":
            other_url = f"sqlite+aiosqlite:///{elsewhere / 'cmschat.db'}"
        else:
            other_url = f"{backend.database_url}_restored"
            await backend._mariadb_execute(f"CREATE DATABASE `{other_url.rsplit('/', 1)[1]}`")
        other = settings.model_copy(update={"database_url": other_url, "data_dir": elsewhere})
        other_kit = service.Toolkit(
            settings=other,
            target=kit.target,
            engine=service.engine_for(other),
            storage=LocalStorage(elsewhere / "files"),
            clock=clock,
        )
        started = time.monotonic()
        await restore_backup(kit=other_kit, backup_id=manifest.id, force=False)
        restore_seconds = time.monotonic() - started
        if args.db == "mariadb":
            await backend._mariadb_execute(f"DROP DATABASE `{other_url.rsplit('/', 1)[1]}`")
        result.update(
            {
                "backup_seconds": manifest.duration_seconds,
                "backup_bytes": manifest.size,
                "database_plain_bytes": manifest.artifacts[0].plain_size,
                "drill_rto_seconds": report.rto_seconds,
                "drill_seconds": drill_seconds,
                "restore_seconds": restore_seconds,
                **common.latency_before_and_during(baseline, during),
            }
        )
    return result


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--file-mib", type=int, default=16)
    parser.add_argument("--baseline", type=float, default=10, help="seconds of sends before")
    common.add_output_options(parser, keep=False)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    common.print_table(result.items())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
