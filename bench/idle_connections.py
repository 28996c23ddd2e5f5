"""Idle WebSocket connections: memory per connection, and the server still answering.

Opens K authenticated WebSocket connections to one server (at most ``--concurrency`` at a
time), keeps them idle (an application ``ping`` every ``--ping-interval`` seconds so the
server's idle timeout does not close them), and measures the server's RSS before and
after: growth per connection in KiB. Then checks that ``/healthz`` still answers and that
a message sent in a room reaches a random sample of the idle connections.

Connections are spread over ``--users`` accounts (K/users connections each), the users
over rooms of 10. This process raises its RLIMIT_NOFILE soft limit to the hard limit; the
server and this process each hold K sockets, so K is bounded by the 20,000-descriptor
limit per process.

Run::

    .venv/bin/python bench/idle_connections.py --connections 15000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import common
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOM_SIZE = 10
TRACED_SERVE = str(Path(__file__).resolve().with_name("traced_serve.py"))


def _written_recently(path: str) -> bool:
    try:
        return os.stat(path).st_mtime > time.time() - 120
    except FileNotFoundError:
        return False


class IdleConnection:
    """One idle client: reads what comes, pings now and then, remembers message contents."""

    def __init__(
        self, url: str, user: common.BenchUser, room_id: int, ping_interval: float
    ) -> None:
        self.url = url
        self.user = user
        self.room_id = room_id
        self.ping_interval = ping_interval
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.received: dict[str, int] = {}  # content -> perf_counter_ns at arrival
        self.arrived = asyncio.Event()
        self.closed_code: int | None = None

    async def open(self) -> bool:
        try:
            self.ws = await connect(
                self.url,
                compression=None,
                ping_interval=None,
                max_size=1 << 20,
                open_timeout=60,
                close_timeout=2,
            )
            await self.ws.send(json.dumps({"type": "auth", "token": self.user.token}))
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=60))
            if frame.get("type") != "ready":
                return False
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            common.log(f"connect failed: {type(exc).__name__}: {exc}")
            return False
        self.task = asyncio.create_task(self.run())
        return True

    async def run(self) -> None:
        assert self.ws is not None  # noqa: S101
        # First ping at a random point of the interval, so pings are spread evenly.
        next_ping = time.monotonic() + random.random() * self.ping_interval
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                    # cancel from close() when recv() completes at the same moment, and the
                    # run stalls for good waiting on this task.
                    async with asyncio.timeout(max(0.1, next_ping - time.monotonic())):
                        raw = await self.ws.recv()
                except TimeoutError:
                    await self.ws.send('{"type":"ping"}')
                    next_ping = time.monotonic() + self.ping_interval
                    continue
                if '"message.created"' in raw:
                    frame = json.loads(raw)
                    if frame.get("type") == "message.created":
                        self.received[frame["message"]["content"]] = time.perf_counter_ns()
                        self.arrived.set()
        except ConnectionClosed as exc:
            self.closed_code = exc.rcvd.code if exc.rcvd else -1

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = common.raise_nofile_limit()
    if args.connections + 500 > nofile:
        raise SystemExit(f"RLIMIT_NOFILE is {nofile}: at most {nofile - 500} connections here")
    result: dict[str, Any] = {
        "tool": "idle_connections",
        "connections": args.connections,
        "users": args.users,
        "db": args.db,
        "machine": common.machine(),
        "source": common.source_state(),
        "server": args.server or "cmschat serve",
        "bench_nofile": nofile,
    }
    rng = random.Random(7)
    wrapper = None
    extra_env = {}
    if args.tracemalloc:
        wrapper = [sys.executable, TRACED_SERVE]
        extra_env["BENCH_TRACEMALLOC_OUT"] = args.tracemalloc
        result["tracemalloc"] = "on (server slower and larger than normal)"
    async with common.environment(
        args.db, keep=args.keep, wrapper=wrapper, extra_env=extra_env, server=args.server
    ) as (_backend, servers, api):
        server = servers[0]
        users = await api.create_users(args.users)
        rooms = await common.bounded(
            8,
            [
                lambda r=r: api.create_room(users[r], users[r : r + ROOM_SIZE], f"idle room {r}")
                for r in range(0, args.users, ROOM_SIZE)
            ],
        )
        room_of_user = {u.id: rooms[i // ROOM_SIZE] for i, u in enumerate(users)}
        members_of_room: dict[int, list[common.BenchUser]] = {}
        for u in users:
            members_of_room.setdefault(room_of_user[u.id], []).append(u)

        # Warm the server's code paths (imports, caches) with a few connections first.
        warm = [
            IdleConnection(
                server.ws,
                users[i % len(users)],
                room_of_user[users[i % len(users)].id],
                args.ping_interval,
            )
            for i in range(50)
        ]
        await common.bounded(50, [c.open for c in warm])
        await common.bounded(50, [c.close for c in warm])
        await asyncio.sleep(3)
        if args.tracemalloc:
            os.kill(server.pid, signal.SIGUSR1)  # baseline snapshot
            await asyncio.sleep(5)
        rss_before = server.rss_kib()
        fds_before = sum(map(common.open_fds, common.process_tree(server.pid)))
        common.log(f"server RSS before: {rss_before / 1024:.1f} MiB, {fds_before} fds")

        conns = [
            IdleConnection(
                server.ws,
                users[i % len(users)],
                room_of_user[users[i % len(users)].id],
                args.ping_interval,
            )
            for i in range(args.connections)
        ]
        started = time.monotonic()
        opened = 0

        async def open_one(c: IdleConnection) -> bool:
            nonlocal opened
            ok = await c.open()
            opened += ok
            if opened % 2500 == 0 and ok:
                common.log(f"  {opened} open, server RSS {server.rss_kib() / 1024:.1f} MiB")
            return ok

        oks = await common.bounded(args.concurrency, [lambda c=c: open_one(c) for c in conns])
        open_seconds = time.monotonic() - started
        common.log(f"opened {sum(oks)}/{len(conns)} connections in {open_seconds:.1f}s")
        await asyncio.sleep(args.settle)
        rss_after = server.rss_kib()
        if args.tracemalloc:
            os.kill(server.pid, signal.SIGUSR2)  # growth since the baseline, to the file
            for _ in range(600):
                if _written_recently(args.tracemalloc):
                    break
                await asyncio.sleep(0.5)
            common.log(f"tracemalloc growth written to {args.tracemalloc}")
        fds_after = sum(map(common.open_fds, common.process_tree(server.pid)))
        live = [c for c, ok in zip(conns, oks, strict=True) if ok and c.closed_code is None]
        common.log(
            f"server RSS after: {rss_after / 1024:.1f} MiB, {fds_after} fds, {len(live)} live"
        )

        async with httpx.AsyncClient(timeout=10) as client:
            t = time.perf_counter()
            health = await client.get(server.http + "/healthz")
            health_ms = (time.perf_counter() - t) * 1000
            ready = await client.get(server.http + "/readyz")
            # A message per sampled connection's room, sent by a member over HTTP.
            sample = rng.sample(live, min(args.sample, len(live)))
            sample_rooms = sorted({c.room_id for c in sample})
            sent: dict[int, tuple[str, int]] = {}  # room -> (content, perf_counter_ns)
            send_status: dict[int, int] = {}
            for room_id in sample_rooms:
                author = members_of_room[room_id][0]
                content = f"hello idle room {room_id} {time.time_ns()}"
                sent[room_id] = (content, time.perf_counter_ns())
                response = await client.post(
                    f"{api.base}/rooms/{room_id}/messages",
                    headers=author.headers,
                    json={"content": content},
                )
                send_status[response.status_code] = send_status.get(response.status_code, 0) + 1

        def got(c: IdleConnection) -> bool:
            return sent[c.room_id][0] in c.received

        async def arrival(c: IdleConnection) -> None:
            while not got(c):
                c.arrived.clear()  # no await between the check and the wait: no race
                await c.arrived.wait()

        waits = [asyncio.create_task(arrival(c)) for c in sample]
        await asyncio.wait(waits, timeout=args.sample_timeout)
        for task in waits:
            task.cancel()
        reached = [c for c in sample if got(c)]
        latencies = sorted(
            (c.received[sent[c.room_id][0]] - sent[c.room_id][1]) / 1e6 for c in reached
        )
        still_live = sum(1 for c in conns if c.ws is not None and c.closed_code is None)
        closed_codes: dict[str, int] = {}
        for c in conns:
            if c.closed_code is not None:
                closed_codes[str(c.closed_code)] = closed_codes.get(str(c.closed_code), 0) + 1
        opened_ok = sum(oks)
        result.update(
            {
                "opened": opened_ok,
                "failed_to_open": len(conns) - opened_ok,
                "open_seconds": open_seconds,
                "server_rss_before_mib": rss_before / 1024,
                "server_rss_after_mib": rss_after / 1024,
                "rss_growth_per_connection_kib": (rss_after - rss_before) / max(1, opened_ok),
                "server_fds_before": fds_before,
                "server_fds_after": fds_after,
                "bench_rss_mib": common.rss_kib(os.getpid()) / 1024,
                "healthz_status": health.status_code,
                "healthz_ms": health_ms,
                "readyz_status": ready.status_code,
                "sample_connections": len(sample),
                "sample_rooms_sent": len(sample_rooms),
                "send_status": send_status,
                "sample_reached": len(reached),
                "sample_deliver_p50_ms": common.percentile(latencies, 50),
                "sample_deliver_max_ms": latencies[-1] if latencies else float("nan"),
                "still_open_at_end": still_live,
                "closed_by_server": closed_codes,
            }
        )
        started = time.monotonic()
        await common.bounded(500, [c.close for c in conns])
        common.log(f"closed connections in {time.monotonic() - started:.1f}s")
        result["server_alive_at_end"] = server.alive()
    common.print_table((k, v) for k, v in result.items())
    return result


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--connections", type=int, default=10_000, help="K idle connections")
    common.add_server_option(parser)
    parser.add_argument("--users", type=int, default=1000, help="accounts the connections use")
    parser.add_argument("--concurrency", type=int, default=200, help="connections opening at once")
    parser.add_argument("--ping-interval", type=float, default=60, help="app-level ping, seconds")
    parser.add_argument("--settle", type=float, default=5, help="seconds idle before measuring")
    parser.add_argument("--sample", type=int, default=200, help="connections checked for delivery")
    parser.add_argument("--sample-timeout", type=float, default=15)
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument(
        "--tracemalloc",
        metavar="PATH",
        help="run the server under tracemalloc (bench/traced_serve.py); write growth to PATH",
    )
    parser.add_argument(
        "--time-limit", type=float, default=900, help="seconds before the run is given up"
    )
    common.add_output_options(parser)
    args = parser.parse_args()
    if args.tracemalloc:
        args.tracemalloc = str(Path(args.tracemalloc).resolve())
    if not 0 < args.connections <= 19_000 or args.users % ROOM_SIZE or args.users <= 0:
        parser.error("--connections in 1..19000, --users a positive multiple of 10")
    common.use_uvloop()
    result = asyncio.run(asyncio.wait_for(run(args), timeout=args.time_limit))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
