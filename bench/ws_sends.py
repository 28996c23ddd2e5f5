"""Durable messages per second over WebSocket: C connections, each with K sends in flight.

Each connection is its own user, member of one of ``--rooms`` rooms, and keeps up to
``--in-flight`` ``message.send`` frames outstanding (pipelined): every ``ack`` is a stored
message (the server acknowledges only after the commit that holds it) and frees a slot for
the next send. A ``busy`` refusal is sent again, with the same ``client_id``, after its
``retry_after`` (capped at 50 ms). Every client also reads its room's ``message.created``
frames and checks their ``seq`` is gap-free, duplicate-free and in order; at the end the
rooms' ``seq`` must have advanced by exactly the acknowledged sends, and every member must
have received each of them.

The load generator can be split over ``--procs`` processes (each its own event loop), and
reports its own CPU share. Server CPU is read from /proc (all worker processes), with
MariaDB's and Redis's CPU, and Redis's bytes in/out and ``PUBLISH`` calls, over the same
measured window. ``--room-size 1`` and ``--room-size 10`` runs, solved together, split the
server's CPU into a cost per send and a cost per frame written.

Run::

    .venv/bin/python bench/ws_sends.py --db sqlite --senders 200 --rooms 20 --duration 20
    .venv/bin/python bench/ws_sends.py --db mariadb --workers 2 --senders 200 --rooms 20 \
        --duration 20
    .venv/bin/python bench/ws_sends.py --db mariadb --workers 4 --redis-cluster-masters 3

``--redis-cluster-masters N`` starts a Redis Cluster of N masters of its own
(``bench/redis_cluster.py``) and runs the server on it (``CMSCHAT_REDIS_CLUSTER``); Redis's
figures (bytes, CPU, calls) are then summed over its nodes. MariaDB's own counters
(``SHOW GLOBAL STATUS``: commits, statements, bytes, data written) are read over the same
window and given per send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import children
import common
import raw_ws
import redis_cluster

Member = tuple[int, str, int]
"""A client: its index, its bearer token, its room id."""


def _client_stats() -> dict[str, Any]:
    return {
        "acked": 0,
        "acked_in_window": 0,
        "busy": 0,
        "errors": 0,
        "error_samples": [],
        "delivered": 0,
        "delivered_in_window": 0,
        "duplicated": 0,
        "gaps": 0,
        "reordered": 0,
        "unacked_at_end": 0,
        "closed_early": 0,
        "ack_latencies_ms": [],
        "last_seqs": [],
    }


_CREATED = b'{"type":"message.created",'
_SEQ = b'"seq":'


def _seq_of(raw: bytes) -> int | None:
    """A ``message.created`` frame's top-level ``seq`` (the envelope writes ``type``,
    ``room_id`` and ``seq`` first), read without parsing the rest; None: another frame."""
    if not raw.startswith(_CREATED):
        return None
    at = raw.index(_SEQ, len(_CREATED)) + len(_SEQ)
    return int(raw[at : raw.index(b",", at)])


async def _client(
    member: Member, url: str, args: dict[str, Any], start: float, stats: dict[str, Any]
) -> None:
    """One connection: sign in, then pipeline sends from ``start`` for the whole run."""
    index, token, room_id = member
    window = (start + args["warmup"], start + args["warmup"] + args["duration"])
    stop_at = window[1]
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    """Set by the ``ready`` frame (which gives ``last_seq`` its first value)."""
    seen: set[int] = set()
    pending: dict[str, tuple[float, str]] = {}
    slots = asyncio.Semaphore(args["in_flight"])
    heard = time.perf_counter()
    last_seq = 0
    pad = "x" * max(0, args["size"] - 24)

    def sample(text: str) -> None:
        if len(stats["error_samples"]) < 5:
            stats["error_samples"].append(text[:300])

    def resend(client_id: str) -> None:
        if client_id in pending:
            ws.send_text(pending[client_id][1])

    def on_text(raw: bytes) -> None:
        nonlocal last_seq, heard
        now = time.perf_counter()
        seq = _seq_of(raw)
        if seq is not None:
            if not ready.done():
                return
            heard = now
            if seq in seen:
                stats["duplicated"] += 1
                sample(f"dup seq {seq} (last {last_seq})")
                return
            if seq <= last_seq:
                stats["reordered"] += 1
            else:
                stats["gaps"] += seq > last_seq + 1
                last_seq = seq
            seen.add(seq)
            stats["delivered"] += 1
            stats["delivered_in_window"] += window[0] <= now < window[1]
            return
        frame = json.loads(raw)
        kind = frame.get("type")
        if not ready.done():
            if kind == "ready":
                last_seq = int(frame["rooms"][str(room_id)])
                ready.set_result(None)
            elif kind == "error":
                ready.set_exception(RuntimeError(f"auth refused: {frame}"))
            return
        if kind not in ("ack", "error"):
            return
        client_id = frame.get("client_id")
        if client_id not in pending:
            stats["errors"] += 1
            sample(raw.decode())
            return
        if kind == "error" and frame.get("code") == "busy":
            stats["busy"] += 1
            loop.call_later(min(0.05, float(frame.get("retry_after") or 0.05)), resend, client_id)
            return
        sent_at, _text = pending.pop(client_id)
        if kind == "ack":
            stats["acked"] += 1
            if window[0] <= now < window[1]:
                stats["acked_in_window"] += 1
                stats["ack_latencies_ms"].append((now - sent_at) * 1000)
        else:
            stats["errors"] += 1
            sample(raw.decode())
        # Reading goes on after this member's last ack: other members' last sends are
        # still on their way to it (the drain below waits for them).
        slots.release()

    async with asyncio.timeout(60):
        ws = await raw_ws.connect(url, on_text)
        ws.send_text(json.dumps({"type": "auth", "token": token, "resume": {}}))
        await ready
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    counter = 0
    while time.perf_counter() < stop_at and not ws.closed.done():
        await slots.acquire()
        counter += 1
        client_id = f"w{index}-{counter}"
        text = json.dumps(
            {
                "type": "message.send",
                "room_id": room_id,
                "content": f"ws send {index} {counter} {pad}",
                "client_id": client_id,
            }
        )
        pending[client_id] = (time.perf_counter(), text)
        ws.send_text(text)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args["drain"]):
            while pending and not ws.closed.done():  # noqa: ASYNC110 - a poll, ends with the run
                await asyncio.sleep(0.05)
            # The deliveries of the last sends may still be on their way to this member:
            # wait for a second without any.
            while time.perf_counter() - heard < 2.0:  # noqa: ASYNC110 - quiet time
                await asyncio.sleep(0.2)
    stats["closed_early"] += ws.ended_by_server
    stats["unacked_at_end"] += len(pending)
    stats["last_seqs"].append((room_id, last_seq))
    ws.close()


async def _load(members: list[Member], url: str, args: dict[str, Any], start: float) -> dict:
    """A load generator process's clients; its stats and its CPU over the measured window."""
    stats = _client_stats()
    cpu: dict[str, float] = {}

    async def clock() -> None:
        await asyncio.sleep(max(0.0, start + args["warmup"] - time.perf_counter()))
        cpu["begin"] = common.self_cpu_seconds()
        await asyncio.sleep(
            max(0.0, start + args["warmup"] + args["duration"] - time.perf_counter())
        )
        cpu["end"] = common.self_cpu_seconds()

    clocked = asyncio.create_task(clock())
    await asyncio.gather(*(_client(m, url, args, start, stats) for m in members))
    await clocked
    stats["cpu_s"] = cpu["end"] - cpu["begin"]
    return stats


def _child(
    members: list[Member],
    url: str,
    args: dict[str, Any],
    start_epoch: float,
    out: Any,
    parent: int,
) -> None:
    children.die_with_parent(parent)
    common.use_uvloop()
    # perf_counter differs between processes: the start is passed as wall time.
    start = time.perf_counter() + (start_epoch - time.time())
    out.put(asyncio.run(_load(members, url, args, start)))


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total = _client_stats()
    total["cpu_s"] = 0.0
    for part in parts:
        for key, value in part.items():
            if key in ("error_samples", "ack_latencies_ms", "last_seqs"):
                total[key].extend(value)
            else:
                total[key] += value
    return total


REDIS_COUNTED = ("publish", "spublish", "evalsha", "ssubscribe", "sunsubscribe")
"""Commands counted per send (the broker's, presence's and the limits' scripts)."""


async def _redis_counters(urls: list[str]) -> dict[str, float]:
    """Summed over the Redis servers (every node of a cluster): bytes, CPU, commands."""
    import redis.asyncio as redis

    totals: dict[str, float] = {}
    for url in urls:
        client = redis.from_url(url)
        try:
            stats = await client.info("stats")
            commands = await client.info("commandstats")
            cpu = await client.info("cpu")
        finally:
            await client.aclose()
        counted = {
            "net_input_bytes": int(stats["total_net_input_bytes"]),
            "net_output_bytes": int(stats["total_net_output_bytes"]),
            "cpu_seconds": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            **{
                f"{name}_calls": int(commands.get(f"cmdstat_{name}", {}).get("calls", 0))
                for name in REDIS_COUNTED
            },
            "commands": sum(int(entry["calls"]) for entry in commands.values()),
        }
        for key, amount in counted.items():
            totals[key] = totals.get(key, 0) + amount
    return totals


async def _mariadb_counters(db: str) -> dict[str, float]:
    """MariaDB's own counters (the whole server: nothing else should run meanwhile)."""
    if db != "mariadb":
        return {}
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(common.MARIADB_URL + "/")
    names = ("Com_commit", "Questions", "Bytes_received", "Bytes_sent", "Innodb_data_written")
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SHOW GLOBAL STATUS"))
            status = {str(name): str(value) for name, value in rows}
    finally:
        await engine.dispose()
    return {name: float(status.get(name, 0)) for name in names}


def _per_send(before: dict[str, float], after: dict[str, float], sends: int) -> dict[str, float]:
    return {key: (after[key] - before[key]) / sends for key in before if key in after}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.senders % args.rooms:
        raise SystemExit("--senders must be a multiple of --rooms")
    redis_url = args.redis_url if args.db == "mariadb" else None
    if args.workers > 1 and args.db == "sqlite":
        raise SystemExit("--workers 2 needs --db mariadb (and Redis)")
    if args.redis_cluster_masters and args.db != "mariadb":
        raise SystemExit("--redis-cluster-masters needs --db mariadb")
    if not args.redis_cluster_masters:
        return await _measure(args, redis_url, [redis_url] if redis_url else [], {})
    with _redis_cluster(args.redis_cluster_masters) as cluster:
        nodes = [f"redis://127.0.0.1:{node.port}/0" for node in cluster.nodes]
        return await _measure(args, cluster.url, nodes, {"CMSCHAT_REDIS_CLUSTER": "true"})


@contextlib.contextmanager
def _redis_cluster(masters: int) -> Iterator[redis_cluster.OwnRedisCluster]:
    """A cluster of ``masters`` masters (no replicas) of the bench's own, for the run."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-cluster-") as directory:
        cluster = redis_cluster.OwnRedisCluster(Path(directory), masters=masters, replicas=0)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


async def _measure(
    args: argparse.Namespace, redis_url: str | None, redis_urls: list[str], extra: dict[str, str]
) -> dict[str, Any]:
    per_room = args.senders // args.rooms
    common.raise_nofile_limit()
    result: dict[str, Any] = {
        "tool": "ws_sends",
        "db": args.db,
        "workers": args.workers,
        "redis": f"cluster of {args.redis_cluster_masters} masters"
        if args.redis_cluster_masters
        else "one server",
        "senders": args.senders,
        "rooms": args.rooms,
        "room_size": per_room,
        "in_flight": args.in_flight,
        "procs": args.procs,
        "duration": args.duration,
        "machine": common.machine(),
        "source": common.source_state(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    # A channel of its own: other users of a shared Redis publish on "cmschat:events",
    # and their rooms' ids and seqs would look like duplicates here.
    extra_env = {
        "CMSCHAT_WORKERS": str(args.workers),
        "CMSCHAT_REDIS_PREFIX": f"bench{secrets.token_hex(4)}",
        **extra,
        **dict(args.env),
    }
    async with common.environment(
        args.db, redis_url=redis_url, keep=args.keep, extra_env=extra_env
    ) as (_backend, servers, api):
        server = servers[0]
        users = await api.create_users(args.senders)
        room_ids = await common.bounded(
            8,
            [
                lambda r=r: api.create_room(
                    users[r * per_room], users[r * per_room : (r + 1) * per_room], f"ws room {r}"
                )
                for r in range(args.rooms)
            ],
        )

        async def last_seqs() -> dict[int, int]:
            seqs = {}
            for r, room_id in enumerate(room_ids):
                room = await api.client.get(
                    f"{api.base}/rooms/{room_id}", headers=users[r * per_room].headers
                )
                seqs[room_id] = int(room.json()["last_seq"])
            return seqs

        start_seq = await last_seqs()
        members = [(i, users[i].token, room_ids[i // per_room]) for i in range(args.senders)]
        settings = {
            k: getattr(args, k) for k in ("warmup", "duration", "drain", "in_flight", "size")
        }
        # Connecting 1,000 clients takes a few seconds: the run starts after that.
        start_epoch = time.time() + 3 + args.senders / 200
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        generators = [
            context.Process(
                target=_child,
                args=(members[p :: args.procs], server.ws, settings, start_epoch, out, os.getpid()),
            )
            for p in range(args.procs)
        ]
        for child in generators:
            child.start()
        await asyncio.sleep(max(0.0, start_epoch + args.warmup - time.time()))
        server0, others = server.cpu_seconds(), common.find_pids()
        others0, machine0 = common.cpu_of(others), common.machine_cpu_seconds()
        redis0 = await _redis_counters(redis_urls)
        maria0 = await _mariadb_counters(args.db)
        profiler = None
        if args.profile:
            out_path = Path(args.profile_dir) / f"ws_sends-{args.db}-{args.workers}w.txt"
            out_path.parent.mkdir(parents=True, exist_ok=True)
            pid = common.process_tree(server.pid)[-1]  # the worker, under --workers
            profiler = common.Profiler(pid, min(args.profile, int(args.duration)), out_path)
        await asyncio.sleep(max(0.0, start_epoch + args.warmup + args.duration - time.time()))
        server_cpu = server.cpu_seconds() - server0
        others1, machine_cpu = common.cpu_of(others), common.machine_cpu_seconds() - machine0
        redis1 = await _redis_counters(redis_urls)
        maria1 = await _mariadb_counters(args.db)
        loop = asyncio.get_running_loop()
        parts = [await loop.run_in_executor(None, out.get) for _ in generators]
        for child in generators:
            child.join(timeout=30)
        if profiler is not None:
            profiler.wait()
        end_seq = await last_seqs()
        stored = sum(end_seq[room_id] - start_seq[room_id] for room_id in room_ids)
    stats = _merge(parts)
    lat = sorted(stats.pop("ack_latencies_ms"))
    # A member whose last seq is short of its room's end left before the tail reached it
    # (gaps would show a loss in the middle).
    behind = sum(max(0, end_seq[room_id] - seen) for room_id, seen in stats.pop("last_seqs"))
    sends = stats["acked_in_window"]
    frames = sends + stats["delivered_in_window"] + stats["busy"]
    bench_cpu = stats.pop("cpu_s")
    others_cpu = {k: others1[k] - v for k, v in others0.items() if k in others1}
    result.update(
        {
            "acked_in_window": sends,
            "durable_msg_per_s": sends / args.duration,
            "ack_p50_ms": common.percentile(lat, 50),
            "ack_p99_ms": common.percentile(lat, 99),
            "deliveries_per_s": stats["delivered_in_window"] / args.duration,
            **{k: v for k, v in stats.items() if k != "acked_in_window"},
            "stored_seq_advance": stored,
            "expected_deliveries": stored * per_room,
            "lost_deliveries": stored * per_room - stats["delivered"],
            "of_which_tail_not_waited_for": behind,
            "acked_equals_stored": stats["acked"] == stored,
            "server_cpu_pct": 100 * server_cpu / args.duration,
            "server_cpu_us_per_send": 1e6 * server_cpu / sends if sends else float("nan"),
            "server_cpu_us_per_frame_out": 1e6 * server_cpu / frames if frames else float("nan"),
            "bench_cpu_pct": 100 * bench_cpu / args.duration,
            "other_services_cpu_pct": {k: 100 * v / args.duration for k, v in others_cpu.items()},
            "other_services_cpu_us_per_send": {
                k: 1e6 * v / sends for k, v in others_cpu.items() if sends
            },
            "rest_of_machine_cpu_pct": 100
            * (machine_cpu - server_cpu - bench_cpu - sum(others_cpu.values()))
            / args.duration,
        }
    )
    if redis0 and sends:
        # A shared Redis: other users' traffic lands here too (compare the calls).
        result["redis_per_send"] = _per_send(redis0, redis1, sends)
        result["redis_cpu_us_per_send"] = 1e6 * result["redis_per_send"]["cpu_seconds"]
    if maria0 and sends:
        result["mariadb_per_send"] = _per_send(maria0, maria1, sends)
    common.print_table((k, v) for k, v in result.items())
    if profiler is not None:
        summary = profiler.summary()
        result["profile"] = summary
        common.print_profile(str(profiler.out), summary)
    return result


def _setting(pair: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--env``."""
    name, equals, value = pair.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {pair!r}")
    return name, value


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--senders", type=int, default=200, help="connections (one user each)")
    parser.add_argument("--rooms", type=int, default=20, help="rooms; senders/rooms members each")
    parser.add_argument("--in-flight", type=int, default=8, help="sends outstanding per connection")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--workers", type=int, choices=(1, 2, 4), default=1)
    parser.add_argument(
        "--redis-cluster-masters",
        type=int,
        default=0,
        help="run on a Redis Cluster of this many masters the bench starts (0: --redis-url)",
    )
    parser.add_argument("--redis-url", default=common.REDIS_URL, help="used with --db mariadb")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds (max 240)")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--drain", type=float, default=30, help="max seconds to wait for acks")
    parser.add_argument("--size", type=int, default=80, help="approximate content length")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=_setting,
        metavar="NAME=VALUE",
        help="set in the server's environment (CMSCHAT_GIL_SWITCH_INTERVAL_MS=0.5)",
    )
    common.add_profile_options(
        parser, what="the server (its last worker) for SECONDS of the measured window"
    )
    common.add_output_options(parser)
    args = parser.parse_args()
    if not 0 < args.duration <= 240 or not 0 < args.senders <= 5000 or args.procs < 1:
        parser.error("--duration in (0, 240], --senders in 1..5000, --procs >= 1")
    common.use_uvloop()
    result = asyncio.run(asyncio.wait_for(run(args), timeout=args.duration + 600))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
