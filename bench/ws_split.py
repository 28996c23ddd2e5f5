"""A durable WebSocket send split by whose code runs it, to the instruction (issue 16).

The issue closes either at its floors or when "a profile shows that what remains is spent
outside cmschat's code (server, driver, database, kernel)": this is that profile for a
send, as ``served_page.py --split`` is for a history page. Two servers, each on its own
scratch database, with ``ws_instructions.py``'s connections and rounds (its options:
rooms of ``--senders/--rooms``, ``--in-flight`` sends outstanding per connection, or
``--lone`` for the whole server):

1. ``cmschat serve`` under callgrind (``--separate-threads=yes``), counting only the round:
   instructions per send (its ack and its room's deliveries included) by thread (the
   event loop's main thread; the others, where aiosqlite runs SQLite) and by shared
   object (``callgrind_objects``: the interpreter, SQLite, libc, uvloop, the GIL's
   handoffs, SQLite's mutexes ...).
2. The same server without valgrind (``served_page.py --profiled-serve``): the user and
   kernel CPU of each thread over ``--cpu-sends`` sends a connection from
   ``/proc/<pid>/task/<tid>/stat`` (profiler off), then a cProfile of the main thread
   (``time.thread_time``) over another such round, grouped by layer (``split.py``). The
   main thread's instructions are split by those layers' shares of its CPU: an estimate
   (cProfile inflates small calls; its shares hold the kernel's time of each layer's
   system calls). The rest of the table is counted.

Run::

    .venv/bin/python bench/ws_split.py --db sqlite
    .venv/bin/python bench/ws_split.py --db sqlite --lone --in-flight 1 --sends 10
    .venv/bin/python bench/ws_split.py --db sqlite --profile-only --top 40   # where to cut
"""

from __future__ import annotations

import asyncio
import json
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import callgrind_objects
import common
import split
import ws_instructions
from ws_instructions import _round

OWN = ("cmschat", "cmschat observability (middleware, metrics, logs)")
KERNEL = "kernel (socket calls)"
MOVED = {("cmschat/realtime/transport.py", "write_frame"): KERNEL}
"""``write_frame`` is a few checks around uvloop's ``transport.write``, a Cython method
cProfile does not see as a call: its self time is the socket's ``send``, the kernel's."""


async def counted(args: Any, dumps: Path) -> dict[str, Any]:
    """Instructions per send by thread and object (callgrind)."""
    wrapper = [
        *ws_instructions.source_wrapper(args),
        *common.under_callgrind(dumps, sys.executable, "-m", "cmschat", threads=True),
    ]
    async with ws_instructions.served(args, wrapper) as (server, clients, members):
        counting = ws_instructions.Counting(server.pid, dumps)
        counting.start()
        await _round(clients, members, args.sends, args.in_flight, "m", lone=args.lone)
        counting.stop()
        main, others = callgrind_objects.by_thread(callgrind_objects.newest_dump(dumps, server.pid))
    sends = args.senders * args.sends

    def per_send(counts: dict[str, int]) -> dict[str, int]:
        return {k: round(v / sends) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}

    return {"main_by_object": per_send(main), "others_by_object": per_send(others)}


def _wait_for(path: Path, seconds: float = 60) -> None:
    """Until the server's signal handler has written its profile."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


async def profiled(args: Any, out: Path, keep: str | None = None) -> dict[str, Any]:
    """User and kernel CPU per send by thread (``/proc``), then the main thread's CPU by
    layer (cProfile), on a server without valgrind."""
    served_page = Path(__file__).parent / "served_page.py"
    wrapper = [
        *ws_instructions.source_wrapper(args),
        sys.executable,
        str(served_page),
        "--profiled-serve",
        str(out),
        "--",
    ]
    sends = args.senders * args.cpu_sends
    result: dict[str, Any] = {}
    async with ws_instructions.served(args, wrapper) as (server, clients, members):
        before = common.threads_user_system(server.pid)
        started = time.monotonic()
        await _round(clients, members, args.cpu_sends, args.in_flight, "c", lone=args.lone)
        result["sends_per_s_unprofiled"] = round(sends / (time.monotonic() - started))
        after = common.threads_user_system(server.pid)
        for name, (u0, s0), (u1, s1) in zip(("main", "others"), before, after, strict=True):
            result[f"{name}_user_us_per_send"] = round(1e6 * (u1 - u0) / sends, 1)
            result[f"{name}_system_us_per_send"] = round(1e6 * (s1 - s0) / sends, 1)
        os.kill(server.pid, signal.SIGUSR1)
        await _round(clients, members, args.cpu_sends, args.in_flight, "p", lone=args.lone)
        os.kill(server.pid, signal.SIGUSR2)
        await asyncio.to_thread(_wait_for, out)
    if keep:
        shutil.copyfile(out, keep)
    layers = split.cprofile_layers(pstats.Stats(str(out)), MOVED)
    result["main_layers_pct"] = {k: round(v, 1) for k, v in layers}
    return result


def _row(name: str, value: int, total: int, prefix: str = "") -> str:
    return f"| {name} | {prefix}{value:,} | {100 * value / total:.1f} % |"


def table(figures: dict[str, Any]) -> str:
    """The figures as one table: per send, by thread and object, the main thread by layer,
    whose code (cmschat's or the rest), and the CPU with the kernel's part."""
    main, others = figures["main_by_object"], figures["others_by_object"]
    main_total, others_total = sum(main.values()), sum(others.values())
    total = main_total + others_total
    pad = "&nbsp;&nbsp;"
    lines = ["| where a send's instructions go | per send | of the send |", "|---|---|---|"]
    lines.append(_row("**whole send, all threads (callgrind)**", total, total))
    lines.append(_row("main thread (event loop, WebSocket, app)", main_total, total))
    lines += [_row(pad + k, v, total) for k, v in main.items() if v]
    layers = figures["main_layers_pct"]
    # callgrind counts no kernel: the main thread's instructions are split by the shares
    # of its CPU less the socket calls' (which the /proc table below gives).
    kernel = layers.get(KERNEL, 0.0)
    lines.append(
        _row(
            f"main thread by layer (times cProfile's shares of its CPU less the socket "
            f"calls' {kernel:.1f} %)",
            main_total,
            total,
        )
    )
    own = 0
    for layer, pct in layers.items():
        if layer == KERNEL:
            continue
        share = round(main_total * pct / (100 - kernel))
        own += share if layer in OWN else 0
        lines.append(_row(f"{pad}{layer} ({pct:.1f} % of its CPU)", share, total, "~"))
    lines.append(_row("other threads (aiosqlite's: SQLite runs here)", others_total, total))
    lines += [_row(pad + k, v, total) for k, v in others.items() if v]
    threads_python = others.get(callgrind_objects.INTERPRETER, 0)
    lines.append(_row("**cmschat's own Python (main thread, estimate)**", own, total, "~"))
    lines.append(
        _row(
            "&nbsp;&nbsp;at most, with all of the other threads' Python "
            "(aiosqlite's loop and cmschat's step runner)",
            own + threads_python,
            total,
            "~",
        )
    )
    lines.append(_row("**the rest: server, loop, libraries, driver, SQLite**", total - own, total))
    cpu = [
        (t, figures[f"{t}_user_us_per_send"], figures[f"{t}_system_us_per_send"])
        for t in ("main", "others")
    ]
    user = sum(u for _t, u, _s in cpu)
    system = sum(s for _t, _u, s in cpu)
    lines += ["", "| CPU per send (`/proc`, profiler off) | user | kernel |", "|---|---|---|"]
    lines += [f"| {t} thread(s) | {u:.0f} µs | {s:.0f} µs |" for t, u, s in cpu]
    lines.append(
        f"| all ({figures['sends_per_s_unprofiled']:,} sends/s) | {user:.0f} µs | "
        f"{system:.0f} µs ({100 * system / ((user + system) or 1):.0f} %) |"
    )
    return "\n".join(lines)


def top_functions(profile: Path, count: int) -> str:
    """cmschat's functions in the main thread's cProfile, the ``count`` largest by self
    time and by cumulative time: where to cut next."""
    raw: dict[Any, Any] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    own = [
        (f"{filename.rpartition('cmschat/')[2]}:{line} {function}", calls, self_t, cum)
        for (filename, line, function), (_cc, calls, self_t, cum, _callers) in raw.items()
        if split.layer_of(filename) in OWN
    ]
    lines = []
    for title, key in (("self", 2), ("cumulative", 3)):
        lines += [f"| cmschat, top {count} by {title} time | calls | self % | cum % |"]
        lines += ["|---|---|---|---|"]
        for name, calls, self_t, cum in sorted(own, key=lambda r: -r[key])[:count]:
            lines.append(
                f"| {name} | {calls:,} | {100 * self_t / total:.2f} | {100 * cum / total:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


async def measure(args: Any) -> dict[str, Any]:
    """The counted run (unless ``--profile-only``), then the profiled one."""
    work = Path(tempfile.mkdtemp(prefix="ws-split-"))
    try:
        figures = {} if args.profile_only else await counted(args, work)
        figures.update(await profiled(args, work / "profile", args.keep_profile))
        if args.top:
            figures["top"] = top_functions(work / "profile", args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def main() -> None:
    """Parse, measure, print the figures as JSON and the table."""
    parser = common.bench_parser(__doc__)
    ws_instructions.add_round_options(parser)
    parser.add_argument(
        "--cpu-sends", type=int, default=100, help="sends a connection in each unvalgrinded round"
    )
    parser.add_argument("--keep-profile", metavar="PATH", help="keep the cProfile (pstats) here")
    parser.add_argument(
        "--top", type=int, default=0, metavar="N", help="also print cmschat's N largest functions"
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="skip the callgrind count (the profile alone)"
    )
    args = parser.parse_args()
    if not args.profile_only and shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    figures = asyncio.run(measure(args))
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    figures["source"] = args.src or f"{common.ROOT / 'src'} ({common.source_state()})"
    top = figures.pop("top", "")
    print(json.dumps(figures, indent=2))
    print()
    if not args.profile_only:
        print(table(figures))
    print(top)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
