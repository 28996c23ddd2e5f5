"""WebSocket fan-out under load: N clients in M rooms sending R msg/s in total.

Every client sends ``message.send`` frames at R/N per second (evenly phased), whose content
carries the sender, a per-sender counter and a ``time.perf_counter_ns()`` stamp; every
client records every ``message.created`` it receives. All clients live in this one
process, so send and receive stamps share one clock. Reports sent, delivered/s, expected
deliveries (each message to every member of its room, sender included), lost, duplicated,
reordered (per room, by seq), send-to-deliver latency p50/p99/p99.9 and the servers' RSS
and CPU seconds (from /proc). A send the server refused as ``busy`` was never stored: it
and the deliveries it would have made are reported apart (``refused_busy``), not as lost;
"lost" is a delivery missing after the drain of a message the server stored: acknowledged,
delivered to some member, or counted by its room's ``last_seq`` (read before and after the
run) though nobody heard of it (``stored_unheard``, each losing every delivery).

The bench makes its own database (SQLite in a temp dir, or a MariaDB database
``cmschat_bench_<random>`` that it drops), users (admin API) and rooms, and stops by itself.

Run (embedded default, and two servers on MariaDB + Redis)::

    .venv/bin/python bench/ws_load.py --clients 1000 --rooms 100 --rate 1000 --duration 60
    .venv/bin/python bench/ws_load.py --clients 1000 --rooms 100 --rate 1000 --duration 60 \
        --servers 2 --db mariadb
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import httpx
import raw_ws

PREFIX = "b:"


@dataclass
class Stats:
    """Everything the clients count, shared (one event loop, no locks needed)."""

    sent: int = 0
    sent_measured: int = 0
    acked: int = 0
    send_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    # message key -> (room index, measured?) for every message sent
    messages: dict[int, tuple[int, bool]] = field(default_factory=dict)
    acked_keys: set[int] = field(default_factory=set)
    refused_keys: set[int] = field(default_factory=set)  # answered ``busy``: never stored
    receivers: dict[int, int] = field(default_factory=dict)  # key -> distinct receivers
    delivered: int = 0
    delivered_in_window: int = 0
    duplicated: int = 0
    reordered: int = 0
    seq_gaps: int = 0
    foreign: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    max_send_lag: float = 0.0
    closed_early: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    window: tuple[int, int] = (0, 0)  # perf_counter_ns of the measured window


def key_of(sender: int, counter: int) -> int:
    return sender * 10_000_000 + counter


def key_of_client_id(client_id: str) -> int:
    """The message key of a send's ``client_id`` (``b<sender>-<counter>``)."""
    sender, _, counter = client_id[1:].partition("-")
    return key_of(int(sender), int(counter))


def on_answer(stats: Stats, frame: dict[str, Any], raw: str) -> None:
    """Count a send's answer: an ``ack`` (stored), a ``busy`` refusal or another error."""
    client_id = frame.get("client_id")
    if frame["type"] == "ack":
        stats.acked += 1
        stats.acked_keys.add(key_of_client_id(client_id or ""))
        return
    stats.send_errors += 1
    if frame.get("code") == "busy" and client_id:
        stats.refused_keys.add(key_of_client_id(client_id))
    elif len(stats.error_samples) < 5:
        stats.error_samples.append(raw[:300])


def outcome(
    stats: Stats, per_room: int, stored_per_room: list[int] | None
) -> dict[str, int | None]:
    """Deliveries expected, missing and refused. ``stored_per_room``: how far each room's
    ``last_seq`` advanced during the run (the database's count, as ws_sends.py reads it). A
    message is known stored when acknowledged or delivered to some member; one stored
    whose ack and every delivery were lost is known only from that count
    (``stored_unheard``), and loses every delivery. A refused one was never stored.
    Without the count (the server gone by the end), ``stored_unheard`` is None: unknown."""
    stored = stats.acked_keys | {key for key, count in stats.receivers.items() if count}
    accepted = [key for key in stats.messages if key not in stats.refused_keys]
    unheard = None
    if stored_per_room is not None:
        known = [0] * len(stored_per_room)
        for key in stored:
            known[stats.messages[key][0]] += 1
        unheard = sum(max(0, n - k) for n, k in zip(stored_per_room, known, strict=True))
    lost = sum(per_room - stats.receivers.get(key, 0) for key in stored)
    return {
        "expected_deliveries_total": len(accepted) * per_room,
        "lost": lost + (unheard or 0) * per_room,
        "refused_busy": len(stats.refused_keys),
        "refused_would_be_deliveries": len(stats.refused_keys) * per_room,
        "stored_unheard": unheard,
        "unacked": len(set(accepted) - stored),
    }


async def last_seqs(
    api: common.Api, users: list[common.BenchUser], room_ids: list[int], per_room: int
) -> list[int]:
    """Each room's ``last_seq`` (GET /rooms/{id} as its first member), by room index."""
    seqs = []
    for r, room_id in enumerate(room_ids):
        room = await api.client.get(
            f"{api.base}/rooms/{room_id}", headers=users[r * per_room].headers
        )
        room.raise_for_status()
        seqs.append(int(room.json()["last_seq"]))
    return seqs


class Client:
    """One signed-in WebSocket client, member of one room."""

    def __init__(
        self,
        index: int,
        user: common.BenchUser,
        room_id: int,
        room_index: int,
        url: str,
        stats: Stats,
    ) -> None:
        self.index = index
        self.user = user
        self.room_id = room_id
        self.room_index = room_index
        self.url = url
        self.stats = stats
        self.ws: raw_ws.RawWebSocket | None = None
        self.counter = 0
        self.seen: set[int] = set()
        self.last_seq = -1
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Set by the ``ready`` frame (which gives ``last_seq`` its first value)."""

    async def open(self) -> None:
        async with asyncio.timeout(60):
            self.ws = await raw_ws.connect(self.url, self.on_text)
            self.ws.send_text(json.dumps({"type": "auth", "token": self.user.token, "resume": {}}))
            await self.ready

    def on_text(self, raw: bytes) -> None:
        """A frame from the server (``raw_ws`` calls this as it reads it)."""
        now = time.perf_counter_ns()
        frame: dict[str, Any] = json.loads(raw)
        kind = frame.get("type")
        if not self.ready.done():
            if kind == "ready":
                self.last_seq = int(frame["rooms"][str(self.room_id)])
                self.ready.set_result(None)
            elif kind == "error":
                self.ready.set_exception(RuntimeError(f"auth refused: {frame}"))
        elif kind == "message.created":
            self.on_message(frame, now)
        elif kind in ("ack", "error"):
            on_answer(self.stats, frame, raw.decode())

    def on_message(self, frame: dict[str, Any], now: int) -> None:
        stats = self.stats
        if frame.get("room_id") != self.room_id:
            stats.foreign += 1
            return
        content = frame["message"]["content"]
        if not content.startswith(PREFIX):
            stats.foreign += 1
            return
        _, sender, counter, stamp = content.split(":")
        key = key_of(int(sender), int(counter))
        if key in self.seen:
            stats.duplicated += 1
            return
        seq = int(frame["seq"])
        if seq <= self.last_seq:
            stats.reordered += 1  # arrived after a later seq of its room
        else:
            if seq > self.last_seq + 1:
                stats.seq_gaps += 1
            self.last_seq = seq
        self.seen.add(key)
        stats.delivered += 1
        stats.receivers[key] = stats.receivers.get(key, 0) + 1
        sent_at = int(stamp)
        start, end = stats.window
        if start <= sent_at < end:
            stats.delivered_in_window += 1
            stats.latencies_ns.append(now - sent_at)

    async def send_loop(
        self, start: float, interval: float, until: float, measure_from: float
    ) -> None:
        """Send at fixed times start, start+interval, ... (perf_counter seconds) until ``until``."""
        assert self.ws is not None  # noqa: S101
        stats = self.stats
        due = start
        while due < until:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                stats.max_send_lag = max(stats.max_send_lag, -delay)
            self.counter += 1
            stamp = time.perf_counter_ns()
            key = key_of(self.index, self.counter)
            stats.messages[key] = (self.room_index, due >= measure_from)
            stats.sent += 1
            if due >= measure_from:
                stats.sent_measured += 1
            if self.ws.closed.done():
                return
            self.ws.send_text(
                json.dumps(
                    {
                        "type": "message.send",
                        "room_id": self.room_id,
                        "content": f"{PREFIX}{self.index}:{self.counter}:{stamp}",
                        "client_id": f"b{self.index}-{self.counter}",
                    }
                )
            )
            due += interval

    async def close(self) -> None:
        ws = self.ws
        if ws is None:
            return
        if ws.ended_by_server:
            code = str(ws.close_code or "none")
            self.stats.close_codes[code] = self.stats.close_codes.get(code, 0) + 1
            self.stats.closed_early += 1
        ws.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.closed, timeout=10)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.clients % args.rooms:
        raise SystemExit("--clients must be a multiple of --rooms")
    per_room = args.clients // args.rooms
    redis_url = args.redis_url if args.servers > 1 else None
    if args.servers > 1 and args.db == "sqlite":
        raise SystemExit("--servers 2 needs --db mariadb (instances share the database)")
    common.raise_nofile_limit()
    result: dict[str, Any] = {
        "tool": "ws_load",
        "clients": args.clients,
        "rooms": args.rooms,
        "room_size": per_room,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "servers": args.servers,
        "db": args.db,
        "redis": redis_url,
        "machine": common.machine(),
        "source": common.source_state(),
        "server": args.server or "cmschat serve",
    }
    if args.src:
        result["source"] = args.src
    # --src: that src/ directory's code under this venv (which imports the checkout that made it
    # otherwise: the server's environment is a clean one, without PYTHONPATH).
    wrapper = ["/usr/bin/env", f"PYTHONPATH={args.src}", str(common.CMSCHAT)] if args.src else None
    async with common.environment(
        args.db,
        servers=args.servers,
        redis_url=redis_url,
        keep=args.keep,
        server=args.server,
        wrapper=wrapper,
    ) as (_backend, servers, api):
        users = await api.create_users(args.clients)
        room_ids: list[int] = []

        async def make_room(r: int) -> int:
            members = users[r * per_room : (r + 1) * per_room]
            return await api.create_room(members[0], members, f"bench room {r}")

        started = time.monotonic()
        room_ids = await common.bounded(8, [lambda r=r: make_room(r) for r in range(args.rooms)])
        common.log(f"created {args.rooms} rooms of {per_room} in {time.monotonic() - started:.1f}s")

        start_seqs = await last_seqs(api, users, room_ids, per_room)
        stats = Stats()
        clients = [
            Client(
                i,
                users[i],
                room_ids[i // per_room],
                i // per_room,
                servers[i % len(servers)].ws,
                stats,
            )
            for i in range(args.clients)
        ]
        rss_idle = {s.name: s.rss_kib() for s in servers}
        started = time.monotonic()
        await common.bounded(args.connect_concurrency, [c.open for c in clients])
        common.log(f"connected {len(clients)} clients in {time.monotonic() - started:.1f}s")
        await asyncio.sleep(1)
        rss_start = {s.name: s.rss_kib() for s in servers}
        # The clients' own garbage collector stays out of the figures: its full collections
        # walked the ~100,000 objects of 1,000 connections (65-85 ms of CPU in which no frame
        # was read) and its young ones up to 20,000 (up to 20 ms). While sending, this process
        # makes no cyclic garbage (0 objects collected in the measured window), so nothing
        # accumulates; reference counting frees the rest.
        gc.collect()
        gc.disable()

        interval = args.clients / args.rate
        t0 = time.perf_counter() + 0.5
        measure_from = t0 + args.warmup
        until = measure_from + args.duration
        stats.window = (int(measure_from * 1e9), int(until * 1e9))
        rng = random.Random(1)
        senders = [
            asyncio.create_task(
                c.send_loop(t0 + rng.random() * interval, interval, until, measure_from)
            )
            for c in clients
        ]
        bench_cpu0 = common.self_cpu_seconds()
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        common.log(f"warm-up done; measuring {args.duration}s at {args.rate} msg/s")
        cpu_start = {s.name: s.cpu_seconds() for s in servers}
        others = common.find_pids()
        others_start = common.cpu_of(others)
        machine0 = common.machine_cpu_seconds()
        bench_cpu1 = common.self_cpu_seconds()
        profilers: list[tuple[str, common.Profiler]] = []
        if args.profile:
            seconds = min(args.profile, args.duration)
            for s in servers:
                out = (
                    Path(args.profile_dir)
                    / f"ws_load-{args.db}-{len(servers)}srv-{args.rate:g}-{s.name}.txt"
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                profilers.append((s.name, common.Profiler(s.pid, seconds, out)))
        await asyncio.gather(*senders)
        cpu_end = {s.name: s.cpu_seconds() for s in servers}
        others_end = common.cpu_of(others)
        machine1 = common.machine_cpu_seconds()
        bench_cpu2 = common.self_cpu_seconds()
        # Drain: wait until every expected delivery has arrived (or give up); a refused
        # send's deliveries never come.
        drain_until = time.monotonic() + args.drain
        while time.monotonic() < drain_until:
            expected_total = (len(stats.messages) - len(stats.refused_keys)) * per_room
            if stats.delivered >= expected_total and stats.acked + stats.send_errors >= stats.sent:
                break
            await asyncio.sleep(0.2)
        rss_end = {s.name: s.rss_kib() for s in servers}
        try:
            end_seqs: list[int] | None = await last_seqs(api, users, room_ids, per_room)
        except httpx.HTTPError:
            end_seqs = None  # the server is gone: report what was heard (servers_alive_at_end)
        gc.enable()
        for _name, profiler in profilers:
            profiler.wait()
        await common.bounded(200, [c.close for c in clients])
        alive = {s.name: s.alive() for s in servers}

    # -- results -------------------------------------------------------------------------
    measured = [k for k, (_room, m) in stats.messages.items() if m]
    refused_measured = sum(k in stats.refused_keys for k in measured)
    expected_measured = (len(measured) - refused_measured) * per_room
    received_measured = sum(stats.receivers.get(k, 0) for k in measured)
    advanced = None
    if end_seqs is not None:
        advanced = [e - b for b, e in zip(start_seqs, end_seqs, strict=True)]
    tally = outcome(stats, per_room, advanced)
    lat = sorted(stats.latencies_ns)
    ms = 1e6
    result.update(
        {
            "sent_total": stats.sent,
            "sent_measured": stats.sent_measured,
            "send_rate_measured": stats.sent_measured / args.duration,
            "acked": stats.acked,
            "unacked": tally["unacked"],
            "stored_unheard": tally["stored_unheard"],
            "send_errors": stats.send_errors,
            "refused_busy": tally["refused_busy"],
            "refused_busy_measured": refused_measured,
            "refused_would_be_deliveries": tally["refused_would_be_deliveries"],
            "expected_deliveries_measured": expected_measured,
            "delivered_measured": received_measured,
            "delivered_per_s": received_measured / args.duration,
            "expected_deliveries_total": tally["expected_deliveries_total"],
            "delivered_total": stats.delivered,
            "lost": tally["lost"],
            "duplicated": stats.duplicated,
            "reordered": stats.reordered,
            "seq_gaps_seen": stats.seq_gaps,
            "foreign_frames": stats.foreign,
            "latency_p50_ms": common.percentile(lat, 50) / ms,
            "latency_p99_ms": common.percentile(lat, 99) / ms,
            "latency_p999_ms": common.percentile(lat, 99.9) / ms,
            "latency_max_ms": (lat[-1] / ms) if lat else float("nan"),
            "max_send_lag_ms": stats.max_send_lag * 1000,
            "connections_closed_by_server": stats.closed_early,
            "close_codes": stats.close_codes,
            "error_samples": stats.error_samples,
            "server_rss_idle_kib": rss_idle,
            "server_rss_start_kib": rss_start,
            "server_rss_end_kib": rss_end,
            "server_cpu_s": {k: cpu_end[k] - cpu_start[k] for k in cpu_start},
            "server_cpu_pct": {
                k: 100 * (cpu_end[k] - cpu_start[k]) / args.duration for k in cpu_start
            },
            "other_services_cpu_pct": {
                k: 100 * (others_end[k] - v) / args.duration
                for k, v in others_start.items()
                if k in others_end
            },
            # Everything else on the machine (other people's jobs, databases, py-spy):
            # machine busy time minus the servers and this process.
            "rest_of_machine_cpu_pct": 100
            * (
                machine1
                - machine0
                - sum(cpu_end[k] - cpu_start[k] for k in cpu_start)
                - (bench_cpu2 - bench_cpu1)
            )
            / args.duration,
            "bench_cpu_pct": 100 * (bench_cpu2 - bench_cpu1) / args.duration,
            "bench_cpu_warmup_s": bench_cpu1 - bench_cpu0,
            # perf_counter_ns (CLOCK_MONOTONIC, the servers' clock too): to line up what
            # the servers logged (their collections, lags) with the measured window.
            "window_ns": list(stats.window),
            "servers_alive_at_end": alive,
        }
    )
    common.print_table((k, v) for k, v in result.items())
    for name, profiler in profilers:
        summary = profiler.summary()
        result[f"profile_{name}"] = summary
        common.print_profile(f"{name} ({profiler.out})", summary)
    return result


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument(
        "--clients", type=int, default=1000, help="WebSocket clients (default 1000)"
    )
    parser.add_argument("--rooms", type=int, default=100, help="rooms; clients/rooms members each")
    parser.add_argument("--rate", type=float, default=1000, help="total messages per second")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds (max 240)")
    parser.add_argument(
        "--warmup", type=float, default=5, help="seconds of sending before measuring"
    )
    parser.add_argument(
        "--drain", type=float, default=15, help="max seconds to wait for deliveries"
    )
    parser.add_argument("--servers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--redis-url", default=common.REDIS_URL, help="used with --servers 2")
    common.add_server_option(parser)
    parser.add_argument("--src", help="run the server from this src/ directory")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    common.add_profile_options(parser, what="each server for SECONDS of the measured window")
    common.add_output_options(parser)
    args = parser.parse_args()
    if not 0 < args.duration <= 240 or args.clients > 15_000 or args.rate <= 0:
        parser.error("--duration must be in (0, 240], --clients <= 15000, --rate > 0")
    common.use_uvloop()
    result = asyncio.run(asyncio.wait_for(run(args), timeout=args.duration + 600))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
