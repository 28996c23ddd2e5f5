"""Server instructions per WebSocket send, counted by callgrind: steady on a loaded machine.

``cmschat serve`` runs under ``valgrind --tool=callgrind --instr-atstart=no``. C
connections (one user each, rooms of C/M) sign in and send a few warm-up messages; then
counting is switched on and every connection sends ``--sends`` messages, ``--in-flight``
outstanding at a time, exactly as ``ws_sends.py`` does; counting stops once every ack and
every member's delivery of every message has arrived. The figure is the server process's
instructions (all its threads) over that stretch, per send (its 1 ack and its room-size
deliveries included), and per frame written.

Timing still shapes the work (how many sends share a group commit, how many frames a
socket's write carries), so runs differ by a few per cent; background ticks (the session
check, once a second) are counted too, a few per cent under valgrind's slowness.

Run::

    .venv/bin/python bench/ws_instructions.py --db sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import children
import common


class Counting:
    """callgrind_control on the server's process."""

    def __init__(self, pid: int, dump_dir: Path) -> None:
        self.pid = str(pid)
        self.dump_dir = dump_dir
        self.tool = shutil.which("callgrind_control") or "callgrind_control"

    def _control(self, *args: str) -> None:
        subprocess.run(  # noqa: S603
            [self.tool, *args, self.pid],
            check=True,
            capture_output=True,
            preexec_fn=children.with_parent(),
        )

    def start(self) -> None:
        self._control("--zero")
        self._control("--instr=on")
        self._control("--zero")

    def stop(self, keep: str | None = None) -> int:
        self._control("--instr=off")
        self._control("--dump")
        newest = max(self.dump_dir.glob("cg.*.out*"), key=lambda f: f.stat().st_mtime_ns)
        if keep:
            # For callgrind_annotate: where the counted instructions went, by C function.
            shutil.copyfile(newest, keep)
        lines = newest.read_text().splitlines()
        totals = next(line for line in lines if line.startswith("totals:"))
        return int(totals.split()[1])


class Profiling:
    """cProfile of the server's event loop over the same stretch (``bench/profiled_serve.py``)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out

    def start(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def stop(self, keep: str | None = None) -> int:
        os.kill(self.pid, signal.SIGUSR2)
        for _ in range(600):
            if self.out.exists() and self.out.stat().st_size:
                break
            time.sleep(0.1)
        time.sleep(1)  # let the dump finish
        return 0


async def _client(member: tuple[int, str, int], url: str) -> Any:
    """A signed-in connection, once ``ready`` has come."""
    from websockets.asyncio.client import connect

    _index, token, _room = member
    ws = await connect(
        url, compression=None, ping_interval=None, max_size=1 << 22, open_timeout=600
    )
    await ws.send(json.dumps({"type": "auth", "token": token, "resume": {}}))
    while json.loads(await asyncio.wait_for(ws.recv(), timeout=600))["type"] != "ready":
        pass
    return ws


async def _round(
    clients: list[Any],
    members: list[tuple[int, str, int]],
    sends: int,
    in_flight: int,
    tag: str,
    *,
    lone: bool = False,
) -> tuple[int, int]:
    """Every client sends ``sends`` messages; returns (acks, deliveries) once all are in.

    ``lone``: ``in_flight`` is for the whole server, not per connection (with 1, every
    send is a batch of its own and each delivery a write of its own, as under
    ``ws_load.py``'s one message a second per client)."""
    room_size = len(clients) // len({m[2] for m in members})
    counts = {"acks": 0, "deliveries": 0, "errors": 0}
    shared = asyncio.Semaphore(in_flight)

    async def one(ws: Any, member: tuple[int, str, int]) -> None:
        index, _token, room_id = member
        slots = shared if lone else asyncio.Semaphore(in_flight)
        expected_deliveries = sends * room_size
        acks = deliveries = 0

        async def read() -> None:
            nonlocal acks, deliveries
            while acks < sends or deliveries < expected_deliveries:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=600))
                if frame["type"] == "ack":
                    acks += 1
                    slots.release()
                elif frame["type"] == "message.created":
                    deliveries += 1
                elif frame["type"] == "error":
                    raise RuntimeError(f"refused: {frame}")

        reader = asyncio.create_task(read())
        for n in range(sends):
            await slots.acquire()
            text = json.dumps(
                {
                    "type": "message.send",
                    "room_id": room_id,
                    "content": f"ws send {index} {n} " + "x" * 56,
                    "client_id": f"{tag}{index}-{n}",
                }
            )
            await ws.send(text)
        await reader
        counts["acks"] += acks
        counts["deliveries"] += deliveries

    await asyncio.gather(*(one(ws, m) for ws, m in zip(clients, members, strict=True)))
    return counts["acks"], counts["deliveries"]


@contextlib.asynccontextmanager
async def served(
    args: Any, wrapper: list[str]
) -> AsyncIterator[tuple[common.ServerProcess, list[Any], list[tuple[int, str, int]]]]:
    """A server started through ``wrapper`` on a scratch database, ``--senders`` signed-in
    connections in ``--rooms`` rooms, each having sent ``--warm`` messages; closed after."""
    if args.senders % args.rooms:
        raise SystemExit("--senders must be a multiple of --rooms")
    per_room = args.senders // args.rooms
    common.raise_nofile_limit()
    # Under valgrind the server takes a minute or more to answer /healthz.
    common.ServerProcess.start = functools.partialmethod(  # type: ignore[method-assign]
        common.ServerProcess.start, wait_seconds=900
    )
    # Every cmschat process of the run (the CLI that migrates and creates the admin, the
    # server) runs the same src/: the clean environment has no PYTHONPATH, the shared venv
    # would import the checkout that made it, and an older --src cannot serve a database
    # migrated past its own migrations.
    source = {"PYTHONPATH": str(args.src or common.ROOT / "src")}
    async with common.environment(args.db, wrapper=wrapper, keep=args.keep, extra_env=source) as (
        _backend,
        servers,
        api,
    ):
        server = servers[0]
        api.client.timeout = 600  # type: ignore[assignment]
        users = await api.create_users(args.senders, concurrency=4)
        room_ids = [
            await api.create_room(
                users[r * per_room], users[r * per_room : (r + 1) * per_room], f"room {r}"
            )
            for r in range(args.rooms)
        ]
        members = [(i, users[i].token, room_ids[i // per_room]) for i in range(args.senders)]
        clients = [await _client(m, server.ws) for m in members]
        await _round(clients, members, args.warm, args.in_flight, "warm", lone=args.lone)
        try:
            yield server, clients, members
        finally:
            for ws in clients:
                await ws.close()


def source_wrapper(args: Any) -> list[str]:
    """The start of the server's command line: its ``--env`` settings (which ``src/`` it
    runs, ``--src`` or this checkout's, ``served`` sets for every cmschat process)."""
    return ["/usr/bin/env", *args.env]


async def run(args: Any) -> dict[str, Any]:
    valgrind = shutil.which("valgrind")
    if not valgrind and not args.profile:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    with tempfile.TemporaryDirectory() as dumps:
        source = source_wrapper(args)
        profile = Path(args.profile) if args.profile else None
        if profile is not None:
            # No valgrind: cProfile over the counted stretch, for where the time goes.
            source = [*source, f"BENCH_PROFILE_OUT={profile}"]
        wrapper = [
            *source,
            valgrind or "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={dumps}/cg.%p.out",
            str(common.CMSCHAT),
        ]
        if profile is not None:
            wrapper = [*source, sys.executable, str(Path(__file__).parent / "profiled_serve.py")]
        async with served(args, wrapper) as (server, clients, members):
            counting: Counting | Profiling = (
                Counting(server.pid, Path(dumps))
                if profile is None
                else Profiling(server.pid, profile)
            )
            idle_rate = 0.0
            if args.idle and profile is None:
                # What the server spends doing nothing (timers, driver threads polling)
                # grows with the time valgrind takes, which the machine's load stretches:
                # counted alone first, so it can be taken off the round's figure.
                counting.start()
                await asyncio.sleep(args.idle)
                idle_rate = counting.stop() / args.idle
            counting.start()
            started = time.monotonic()
            acks, deliveries = await _round(
                clients, members, args.sends, args.in_flight, "m", lone=args.lone
            )
            instructions = counting.stop(args.dump)
            took = time.monotonic() - started
    per_room = args.senders // args.rooms
    sends = args.senders * args.sends
    result = {
        "tool": "ws_instructions",
        "db": args.db,
        "senders": args.senders,
        "room_size": per_room,
        "in_flight": args.in_flight,
        "lone": args.lone,
        "sends": sends,
        "acks": acks,
        "deliveries": deliveries,
        "seconds_under_valgrind": round(took, 1),
        "instructions": instructions,
        "instructions_per_send": round(instructions / sends),
        "instructions_per_frame": round(instructions / (acks + deliveries)),
        "idle_instructions_per_s": round(idle_rate),
        "less_idle_per_send": round((instructions - idle_rate * took) / sends),
        "source": args.src or f"{common.ROOT / 'src'} ({common.source_state()})",
    }
    common.print_table(result.items())
    return result


def add_round_options(parser: argparse.ArgumentParser) -> None:
    """The options of the server, its connections and the counted round."""
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--senders", type=int, default=40, help="connections (one user each)")
    parser.add_argument("--rooms", type=int, default=4, help="rooms; senders/rooms members each")
    parser.add_argument("--in-flight", type=int, default=8, help="sends outstanding per connection")
    parser.add_argument(
        "--lone", action="store_true", help="--in-flight is for all connections together"
    )
    parser.add_argument("--sends", type=int, default=25, help="counted sends per connection")
    parser.add_argument("--warm", type=int, default=3, help="uncounted sends per connection first")
    parser.add_argument(
        "--idle", type=float, default=0, help="count this many idle seconds first (see code)"
    )
    parser.add_argument("--src", help="run the server from this src/ directory instead")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the server's environment (CMSCHAT_CHAT__CACHE_SECONDS=60: the caches "
        "never expire in the round, whatever valgrind's pace)",
    )
    common.add_output_options(parser)


def main() -> None:
    parser = common.bench_parser(__doc__)
    add_round_options(parser)
    parser.add_argument(
        "--profile", help="no valgrind: write a cProfile of the counted stretch to this path"
    )
    parser.add_argument("--dump", help="keep the counted stretch's callgrind dump at this path")
    args = parser.parse_args()
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
        Path(args.profile).unlink(missing_ok=True)
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0)


if __name__ == "__main__":
    main()
