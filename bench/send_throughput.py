"""Durable messages per second over HTTP: C concurrent senders for D seconds.

Each sender is its own user and loops ``POST /api/v1/rooms/{id}/messages`` on a keep-alive
connection (one ``httpx.AsyncClient``); the server answers 201 only after the commit that
holds the message, so every 201 is a stored message. Senders are spread over ``--rooms``
rooms. Reports msg/s (201s in the measured window / D), latency p50/p99, statuses, the
server's CPU use, and checks afterwards that the rooms hold exactly the acknowledged
messages (seq gap-free).

Run::

    .venv/bin/python bench/send_throughput.py --db sqlite --senders 64 --duration 30
    .venv/bin/python bench/send_throughput.py --db mariadb --senders 64 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import common
import httpx


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.senders % args.rooms:
        raise SystemExit("--senders must be a multiple of --rooms")
    per_room = args.senders // args.rooms
    result: dict[str, Any] = {
        "tool": "send_throughput",
        "db": args.db,
        "senders": args.senders,
        "rooms": args.rooms,
        "duration": args.duration,
        "warmup": args.warmup,
        "machine": common.machine(),
        "source": common.source_state(),
        "server": args.server or "cmschat serve",
        "workers": args.workers,
        "redis": args.redis,
    }
    async with common.environment(
        args.db, keep=args.keep, server=args.server, **common.workers_setup(args)
    ) as (
        _backend,
        servers,
        api,
    ):
        server = servers[0]
        users = await api.create_users(args.senders)
        room_ids = await common.bounded(
            8,
            [
                lambda r=r: api.create_room(
                    users[r * per_room], users[r * per_room : (r + 1) * per_room], f"send room {r}"
                )
                for r in range(args.rooms)
            ],
        )
        start_seq: dict[int, int] = {}
        for r, room_id in enumerate(room_ids):
            room = await api.client.get(
                f"{api.base}/rooms/{room_id}", headers=users[r * per_room].headers
            )
            start_seq[room_id] = int(room.json()["last_seq"])
        limits = httpx.Limits(max_connections=args.senders, max_keepalive_connections=args.senders)
        created_total = 0
        counters = itertools.count()
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            urls = [
                f"{api.base}/rooms/{room_ids[i // per_room]}/messages" for i in range(args.senders)
            ]
            body_pad = "x" * max(0, args.size - 40)

            async def send(worker: int) -> tuple[int, str | None]:
                nonlocal created_total
                n = next(counters)
                response = await client.post(
                    urls[worker],
                    headers=users[worker].headers,
                    json={
                        "content": f"throughput {worker} {n} {body_pad}",
                        "client_id": f"t{worker}-{n}",
                    },
                )
                if response.status_code == 201:
                    created_total += 1
                    return 201, None
                return response.status_code, f"{response.status_code} {response.text[:120]}"

            cpu = common.CpuWindow(server.pid)
            profiler = None
            if args.profile:
                out = Path(args.profile_dir) / f"send_throughput-{args.db}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)

                async def start_profile() -> common.Profiler:
                    await asyncio.sleep(args.warmup + 1)
                    return common.Profiler(
                        server.pid, min(args.profile, int(args.duration) - 1), out
                    )

                profile_task = asyncio.create_task(start_profile())
            t_start = time.perf_counter()
            load = await common.timed_load(
                args.senders, send, warmup=args.warmup, duration=args.duration
            )
            elapsed = time.perf_counter() - t_start
            cpu.close(elapsed)
            if args.profile:
                profiler = await profile_task
                profiler.wait()
            # Afterwards: each room's seq advance vs. what was acknowledged.
            stored = 0
            for r, room_id in enumerate(room_ids):
                room = await client.get(
                    f"{api.base}/rooms/{room_id}", headers=users[r * per_room].headers
                )
                stored += int(room.json()["last_seq"]) - start_seq[room_id]
        rss = server.rss_kib()
    lat = load.latencies
    result.update(
        {
            "created_201_measured": load.ok,
            "msg_per_s": load.ok / args.duration,
            "latency_p50_ms": common.percentile(lat, 50) * 1000,
            "latency_p99_ms": common.percentile(lat, 99) * 1000,
            "latency_max_ms": (lat[-1] * 1000) if lat else float("nan"),
            "statuses": load.statuses,
            "errors": load.errors,
            "acknowledged_total": created_total,
            "stored_seq_advance": stored,
            "server_rss_end_mib": rss / 1024,
            **cpu.fields,
        }
    )
    return common.report(result, profiler)


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--senders", type=int, default=64, help="concurrent senders (users)")
    common.add_server_option(parser)
    common.add_workers_option(parser)
    parser.add_argument("--rooms", type=int, default=16, help="rooms the senders are spread over")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds (max 240)")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--size", type=int, default=80, help="approximate content length")
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    common.add_profile_options(parser, what="the server for SECONDS of the measured window")
    common.add_output_options(parser)
    args = parser.parse_args()
    if not 0 < args.duration <= 240 or not 0 < args.senders <= 1000:
        parser.error("--duration in (0, 240], --senders in 1..1000")
    common.use_uvloop()
    result = asyncio.run(asyncio.wait_for(run(args), timeout=args.duration + 600))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
