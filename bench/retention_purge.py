"""The retention purge on a big room, while people keep chatting in another one.

Seeds a room with M messages dated 400 days ago (rows inserted directly, as
``history.py`` does), sets a 30-day message policy, then runs the purge in this process
(``run_purge``, the same code ``cmschat retention run`` uses) against the live server's
database while S senders post to a second room over HTTP. Reports the purge rate, the
longest batch transaction (how long a purge can hold locks), and the senders' latency
during the purge against the same senders before it.

Run::

    .venv/bin/python bench/retention_purge.py --db mariadb --messages 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import common
import history
import httpx

SENDERS = 8


async def send_loop(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], stop: asyncio.Event
) -> list[float]:
    """Post messages until ``stop``; the latency of each, in ms."""
    latencies = []
    n = 0
    while not stop.is_set():
        n += 1
        started = time.perf_counter()
        response = await client.post(url, json={"content": f"live {n}"}, headers=headers)
        if response.status_code != 201:
            raise RuntimeError(f"send failed: {response.status_code} {response.text[:120]}")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure_senders(
    api: common.Api, room_id: int, users: list[common.BenchUser], work: Any
) -> tuple[list[float], Any]:
    """Run ``work`` while SENDERS post to ``room_id``; their latencies and work's result."""
    stop = asyncio.Event()
    url = f"{api.base}/rooms/{room_id}/messages"
    loops = [
        asyncio.create_task(send_loop(api.client, url, users[i].headers, stop))
        for i in range(SENDERS)
    ]
    try:
        result = await work()
    finally:
        stop.set()
    latencies = [ms for loop in await asyncio.gather(*loops) for ms in loop]
    return sorted(latencies), result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from cmschat.attachments.erasure import Eraser
    from cmschat.attachments.storage import storage_from_url
    from cmschat.audit.service import audited
    from cmschat.clock import SystemClock
    from cmschat.db.session import Database, create_engine
    from cmschat.retention import purge
    from cmschat.settings import RetentionSettings

    result: dict[str, Any] = {
        "tool": "retention_purge",
        "db": args.db,
        "messages": args.messages,
        "batch_size": args.batch_size,
        "pause_ms": args.pause_ms,
        "machine": common.machine(),
        "source": common.source_state(),
    }
    async with common.environment(args.db) as (backend, _servers, api):
        users = await api.create_users(SENDERS, prefix="p")
        old_room = await api.create_room(users[0], users, "archive")
        live_room = await api.create_room(users[0], users, "live")
        seconds = await history.seed(
            backend.database_url,
            room_id=old_room,
            author_id=users[0].id,
            count=args.messages,
            batch=10_000,
            start=datetime.now(UTC) - timedelta(days=400),
        )
        result["seed_seconds"] = seconds
        response = await api.client.put(
            f"{api.base}/admin/retention/defaults",
            json={"message_days": 30, "attachment_days": None},
            headers=api.admin_headers,
        )
        response.raise_for_status()

        async def idle() -> None:
            await asyncio.sleep(args.baseline)

        baseline, _ = await measure_senders(api, live_room, users, idle)

        db = audited(Database(create_engine(backend.database_url), SystemClock()))
        eraser = Eraser(db, storage_from_url((backend.workdir / "files").as_uri()))
        batch_ms: list[float] = []
        real_batch = purge.purge_batch

        async def timed_batch(session: Any, **kwargs: Any) -> int:
            started = time.perf_counter()
            removed = await real_batch(session, **kwargs)
            await session.commit()  # the unit of work commits next; timed with it
            batch_ms.append((time.perf_counter() - started) * 1000)
            return removed

        purge.purge_batch = timed_batch  # type: ignore[assignment]
        settings = RetentionSettings(
            batch_size=args.batch_size, batch_pause_ms=args.pause_ms, run_daily=False
        )

        async def purge_all() -> tuple[float, Any]:
            started = time.perf_counter()
            report = await purge.run_purge(db, clock=db.clock, settings=settings, eraser=eraser)
            return time.perf_counter() - started, report

        try:
            during, (took, report) = await measure_senders(api, live_room, users, purge_all)
        finally:
            purge.purge_batch = real_batch  # type: ignore[assignment]
            await db.dispose()
        purged = report.totals[0]
        if purged != args.messages:
            raise RuntimeError(f"purged {purged} of {args.messages} messages")
        batch_ms.sort()
        result.update(
            {
                "purge_seconds": took,
                "purged_per_s": purged / took,
                "batches": len(batch_ms),
                "batch_ms_p50": statistics.median(batch_ms),
                "batch_ms_max": batch_ms[-1],
                **common.latency_before_and_during(baseline, during),
            }
        )
    return result


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pause-ms", type=int, default=50, help="pause between batches")
    parser.add_argument("--baseline", type=float, default=10, help="seconds of sends before")
    common.add_output_options(parser, keep=False)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    common.print_table(result.items())
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
