"""History pages at depth: a room seeded with 1,000,000 messages, then GET pages under load.

Seeds one room FAST by inserting rows directly (SQLAlchemy Core executemany, batches of
``--batch``) into ``messages`` and ``room_events`` with every audit column filled, then
sets ``rooms.last_seq``, using the table objects of ``cmschat.chat.models``. (The search
index ``message_search`` is derived data and is not filled: history does not read it.)
Then C concurrent clients GET ``/api/v1/rooms/{id}/messages?limit=50`` (the newest page,
or with a random ``before`` cursor for ``--before-share`` of the requests) for D seconds.
Reports requests/s and latency p50/p99, the server's CPU use and the load generator's own.

The load is ``raw_http``'s: keep-alive HTTP/1.1 written and read as bytes, its connections
spread over ``--procs`` processes, each reporting its CPU over the measured window (httpx
in this process cost more CPU per request than the server, and was the limit).

Run::

    .venv/bin/python bench/history.py --messages 1000000 --concurrency 32 --duration 30
    .venv/bin/python bench/history.py --db mariadb --workers 2 --procs 2 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import common
import raw_http
from sqlalchemy import func, insert, select, update

ROOM_MEMBERS = 8


def _tail_maker() -> Any:
    """``(content, at) -> tail`` of a plain-text message with no mention, reply or file, as
    its send stores it (``chat.messages.page_tail``; code that has the column)."""
    from cmschat import jsonbytes
    from cmschat.chat.messages import page_tail

    def tail(content: str, at: datetime) -> str:
        text = jsonbytes.dumps(content)
        return page_tail.tail(text, text, None, (), page_tail.ending(at)).decode()

    return tail


async def seed(
    database_url: str,
    *,
    room_id: int,
    author_id: int,
    count: int,
    batch: int,
    start: datetime | None = None,
) -> float:
    """Insert ``count`` messages + events into the room, 1 ms apart from ``start`` (default:
    ending now); seconds taken."""
    from cmschat.chat.models import EventType, Message, Room, RoomEvent
    from cmschat.chat.rendering import render
    from cmschat.db.session import create_engine

    messages, events, rooms = Message.__table__, RoomEvent.__table__, Room.__table__
    engine = create_engine(database_url)
    started = time.monotonic()
    actor = f"user:{author_id}"
    try:
        async with engine.begin() as conn:
            base_seq = int(
                (
                    await conn.execute(select(rooms.c.last_seq).where(rooms.c.id == room_id))
                ).scalar_one()
            )
            base_id = int(
                (await conn.execute(select(func.coalesce(func.max(messages.c.id), 0)))).scalar_one()
            )
        # Plain text renders to itself (checked once here), so the HTML is the content.
        sample = "seed message 1 of the history benchmark"
        if render(sample) != sample:
            raise RuntimeError("rendering of plain text changed; adapt the seeder")
        t0 = start or datetime.now(UTC) - timedelta(milliseconds=count)
        tail = _tail_maker() if "page_tail" in messages.c else None
        done = 0
        while done < count:
            n = min(batch, count - done)
            message_rows = []
            event_rows = []
            for i in range(done, done + n):
                at = t0 + timedelta(milliseconds=i)
                content = f"seed message {i + 1} of the history benchmark"
                message_rows.append(
                    {
                        "id": base_id + i + 1,
                        "room_id": room_id,
                        "seq": base_seq + i + 1,
                        "author_id": author_id,
                        "client_id": None,
                        "reply_to_id": None,
                        "content": content,
                        "content_html": content,
                        "edited_at": None,
                        "deleted_at": None,
                        "created_at": at,
                        "created_by": actor,
                        "updated_at": at,
                        "updated_by": actor,
                    }
                )
                if tail is not None:  # as the message's send would have stored it
                    message_rows[-1]["page_tail"] = tail(content, at)
                event_rows.append(
                    {
                        "room_id": room_id,
                        "seq": base_seq + i + 1,
                        "type": EventType.message_created,
                        "message_id": base_id + i + 1,
                        "user_id": None,
                        "created_at": at,
                        "created_by": actor,
                        "updated_at": at,
                        "updated_by": actor,
                    }
                )
            async with engine.begin() as conn:
                await conn.execute(insert(messages), message_rows)
                await conn.execute(insert(events), event_rows)
                await conn.execute(
                    update(rooms).where(rooms.c.id == room_id).values(last_seq=base_seq + done + n)
                )
            done += n
            if done % (batch * 10) == 0 or done == count:
                elapsed = time.monotonic() - started
                common.log(f"  seeded {done:,}/{count:,} ({done / elapsed:,.0f} rows/s)")
    finally:
        await engine.dispose()
    return time.monotonic() - started


async def query_plan(database_url: str, *, room_id: int, before: int) -> list[str]:
    """The database's plan for the history page query (EXPLAIN / EXPLAIN QUERY PLAN)."""
    from sqlalchemy import text

    from cmschat.db.session import create_engine

    engine = create_engine(database_url)
    query = (
        "SELECT * FROM messages WHERE room_id = :room AND seq < :before ORDER BY seq DESC LIMIT 51"
    )
    prefix = "EXPLAIN QUERY PLAN " if database_url.startswith("sqlite") else "EXPLAIN "
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(prefix + query), {"room": room_id, "before": before})
            return [" | ".join(str(v) for v in row) for row in rows]
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "tool": "history",
        "db": args.db,
        "messages": args.messages,
        "concurrency": args.concurrency,
        "duration": args.duration,
        "before_share": args.before_share,
        "machine": common.machine(),
        "source": common.source_state(),
        "server": args.server or "cmschat serve",
        "workers": args.workers,
        "redis": args.redis,
        "procs": args.procs,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    setup = common.workers_setup(args)
    if args.replica_of_itself:
        replica = {"CMSCHAT_DATABASE_REPLICA_URLS": "{database_url}"}
        setup["extra_env"] = {**setup.get("extra_env", {}), **replica}
    result["replica_of_itself"] = args.replica_of_itself
    async with common.environment(args.db, keep=args.keep, server=args.server, **setup) as (
        backend,
        servers,
        api,
    ):
        server = servers[0]
        users = await api.create_users(ROOM_MEMBERS, prefix="h")
        room_id = await api.create_room(users[0], users, "history room")
        seconds = await seed(
            backend.database_url,
            room_id=room_id,
            author_id=users[0].id,
            count=args.messages,
            batch=args.batch,
        )
        result["seed_seconds"] = seconds
        result["query_plan"] = await query_plan(
            backend.database_url, room_id=room_id, before=args.messages // 2
        )
        result["seed_rows_per_s"] = args.messages / seconds
        room = (
            await api.client.get(f"{api.base}/rooms/{room_id}", headers=users[0].headers)
        ).json()
        last_seq = int(room["last_seq"])
        first_seq = last_seq - args.messages + 1
        server_url = urlsplit(api.base)
        plan = raw_http.Plan(
            host=server_url.hostname or "127.0.0.1",
            port=server_url.port or 80,
            path=f"{server_url.path}/rooms/{room_id}/messages",
            limit=50,
            tokens=[user.token for user in users],
            first_seq=first_seq,
            last_seq=last_seq,
            before_share=args.before_share,
            start=0.0,
            end=0.0,
        )
        # A first request shows the cold cost (nothing cached yet).
        t = time.perf_counter()
        first = await api.client.get(
            f"{api.base}/rooms/{room_id}/messages?limit=50", headers=users[0].headers
        )
        result["first_request_ms"] = (time.perf_counter() - t) * 1000
        first.raise_for_status()
        # The generator's processes take a second or two to start: the window opens after.
        start = time.monotonic() + 2 + args.warmup
        plan = replace(plan, start=start, end=start + args.duration)
        profiler = None
        profile_task = None
        if args.profile:
            out = Path(args.profile_dir) / f"history-{args.db}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)

            async def start_profile() -> common.Profiler:
                await asyncio.sleep(max(0.0, start - time.monotonic() + 1))
                return common.Profiler(server.pid, min(args.profile, int(args.duration) - 1), out)

            profile_task = asyncio.create_task(start_profile())

        async def window() -> common.CpuWindow:
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            opened = common.CpuWindow(server.pid)
            await asyncio.sleep(max(0.0, plan.end - time.monotonic()))
            opened.close(args.duration)
            return opened

        cpu_task = asyncio.create_task(window())
        load, per_process = await raw_http.load(
            plan, concurrency=args.concurrency, procs=args.procs
        )
        cpu = await cpu_task
        if profile_task is not None:
            profiler = await profile_task
            profiler.wait()
        rss = server.rss_kib()
    lat = load.latencies
    fields = raw_http.summary(load, per_process, args.duration)
    result.update(
        {
            "ok_requests": load.ok,
            "requests_per_s": load.ok / args.duration,
            "latency_p50_ms": common.percentile(lat, 50) * 1000,
            "latency_p99_ms": common.percentile(lat, 99) * 1000,
            "latency_max_ms": (lat[-1] * 1000) if lat else float("nan"),
            "statuses": load.statuses,
            "errors": load.errors,
            "server_rss_end_mib": rss / 1024,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            **cpu.fields,
            **fields,
            "server_cpu_us_per_request": (
                1e6 * cpu.fields["server_cpu_s"] / load.ok if load.ok else None
            ),
            # The parent only waits; the generator's CPU is its processes' own.
            "rest_of_machine_cpu_pct_of_run": (
                cpu.fields["rest_of_machine_cpu_pct_of_run"] - fields["load_cpu_pct_of_run"]
            ),
        }
    )
    return common.report(result, profiler)


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to seed")
    common.add_server_option(parser)
    common.add_workers_option(parser)
    parser.add_argument("--batch", type=int, default=10_000, help="rows per executemany")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds (max 240)")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument(
        "--procs", type=int, default=2, help="load generator processes (raw HTTP/1.1 each)"
    )
    parser.add_argument(
        "--before-share",
        type=float,
        default=0.5,
        help="share of requests with a random before cursor (0..1)",
    )
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument(
        "--replica-of-itself",
        action="store_true",
        help="MariaDB: name the database itself as its read replica, so every page takes the "
        "replica route (the position asked of the primary, checked on the 'replica'): what "
        "the routing costs, not what a real replica saves",
    )
    common.add_profile_options(parser, what="the server for SECONDS of the measured window")
    common.add_output_options(parser)
    args = parser.parse_args()
    if args.workers > 1 and args.db == "mariadb":
        args.redis = True  # workers of one server share events through Redis
    if args.replica_of_itself and args.db != "mariadb":
        parser.error("--replica-of-itself needs --db mariadb")
    if args.workers > 1 and args.db == "sqlite":
        parser.error("--workers 2 needs --db mariadb (and Redis), as ws_sends.py")
    if not 1 <= args.procs <= args.concurrency:
        parser.error("--procs in 1..--concurrency")
    if not 0 < args.duration <= 240 or not 0 < args.messages <= 5_000_000:
        parser.error("--duration in (0, 240], --messages in 1..5,000,000")
    common.use_uvloop()
    result = asyncio.run(asyncio.wait_for(run(args), timeout=args.duration + 1200))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
