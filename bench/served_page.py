"""A served history page counted and split: ``cmschat serve`` under callgrind, client apart.

The server is ``cmschat serve`` itself (uvicorn with httptools and uvloop, one process, the
app with its middleware and JSON access lines to its log, as shipped), on SQLite or
MariaDB, started under valgrind's callgrind with counting off; this process is the
client (``http.client`` on one kept connection, not counted) and turns counting on only
around the measured pages (``callgrind_control``). So the figure is the whole served
page: the HTTP parsing and writing, the event loop, the app, the driver's thread, SQLite's
C code (MariaDB's server is another process and not in it).

The split: callgrind's self instructions by the shared object they ran in (the Python
interpreter, uvloop/libuv, SQLite, the MariaDB driver, orjson, libc, ...), and, with
``--profile``, the same server run without valgrind under a cProfile of its main thread
(CPU time, ``time.thread_time``) grouped by layer (``split.py``): what of the
interpreter's part is the HTTP protocol, the event loop, cmschat's route, observability, SQLAlchemy.

``--split`` does all of it in one run and prints the table (``split.served_table``): the
instructions by object and thread (main thread, driver's thread), the main thread's by
layer (its instructions times the layers' shares of its CPU in the profiled run: an
estimate), user and kernel CPU per page and per thread (``/proc``, the profiler off), and
on SQLite the engine's part by what the statement asks of it (``page_engine.py``: rows
and joins, writing the JSON, and the JSON stored as an experiment). ``--messages N``
seeds the room with N more messages first (``history.seed``); ``--deep`` asks pages
below cursors spread over them instead of the newest page.

Run::

    .venv/bin/python bench/served_page.py --db sqlite --pages 100
    .venv/bin/python bench/served_page.py --db mariadb --pages 100 --profile /tmp/served
    .venv/bin/python bench/served_page.py --db sqlite --split --messages 1000000 [--deep]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import callgrind_objects
import children
import common
import history
import httpx
import page_engine
import split


def control(pid: int, *args: str) -> None:
    """``callgrind_control`` on the server."""
    tool = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run(  # noqa: S603
        [tool, *args, str(pid)], check=True, capture_output=True, preexec_fn=children.with_parent()
    )


class Pages:
    """A kept connection to the server and signed-in page requests (in turn, if several)."""

    def __init__(self, port: int, paths: list[str], token: str) -> None:
        self.connection = http.client.HTTPConnection(common.HOST, port, timeout=600)
        self.paths = paths
        self.asked = 0
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, count: int) -> None:
        """``count`` pages of 50, each checked whole."""
        for _ in range(count):
            path = self.paths[self.asked % len(self.paths)]
            self.asked += 1
            self.connection.request("GET", path, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
            if response.status != 200 or body.count(b'"seq":') != 50:
                raise RuntimeError(f"{response.status} {body[:200]!r}")


class Room:
    """The bench admin's token, the room and the pages asked of it."""

    def __init__(self, token: str, room_id: int, paths: list[str], cursors: list[int]) -> None:
        self.token, self.room_id, self.paths, self.cursors = token, room_id, paths, cursors


async def prepared_room(
    server: common.ServerProcess, backend: common.Backend, password: str, args: argparse.Namespace
) -> Room:
    """A room of ``--messages`` seeded ones, then 120 sent (every other one mentioning the
    admin): the newest page, or (``--deep``) 16 pages below cursors across the seeded ones."""
    async with httpx.AsyncClient(base_url=server.http, timeout=600) as client:
        login = {"username": common.ADMIN, "password": password}
        token = (await client.post("/api/v1/auth/login", json=login)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        me = (await client.get("/api/v1/me", headers=headers)).json()["id"]
        room = (
            await client.post(
                "/api/v1/rooms",
                json={"kind": "group", "name": "served", "member_ids": []},
                headers=headers,
            )
        ).json()["id"]
        if args.messages:
            await history.seed(
                backend.database_url, room_id=room, author_id=me, count=args.messages, batch=5000
            )
        url = f"/api/v1/rooms/{room}/messages"
        for n in range(120):
            text = f"hello @{common.ADMIN} {n}" if n % 2 else f"seed {n}"
            response = await client.post(url, json={"content": text}, headers=headers)
            response.raise_for_status()
    cursors = []
    if args.deep:
        span = max(args.messages, 120) - 60
        cursors = [60 + (n * span) // 16 for n in range(1, 17)]
    paths = [f"{url}?limit=50&before={c}" for c in cursors] or [f"{url}?limit=50"]
    return Room(token, room, paths, cursors)


def counted(pid: int, pages: Pages, count: int, dumps: Path, keep: str | None) -> dict[str, Any]:
    """Instructions per page of the server under callgrind, in all, by object and (with
    ``--separate-threads=yes``) by thread."""
    control(pid, "--zero")
    control(pid, "--instr=on")
    control(pid, "--zero")
    pages.get(count)
    control(pid, "--instr=off")
    control(pid, "--dump")
    files = callgrind_objects.newest_dump(dumps, pid)
    main, others = callgrind_objects.by_thread(files)
    groups = {k: main.get(k, 0) + others.get(k, 0) for k in main.keys() | others.keys()}
    if keep:
        for file in files:
            shutil.copy(
                file, keep if len(files) == 1 else f"{keep}{file.name.rpartition('.out')[2]}"
            )

    def per_page(counts: dict[str, int]) -> dict[str, int]:
        return {k: round(v / count) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}

    result = {
        "instructions_per_page": round(sum(groups.values()) / count),
        "by_object_per_page": per_page(groups),
    }
    if len(files) > 1:
        result["main_thread_by_object_per_page"] = per_page(main)
        result["other_threads_by_object_per_page"] = per_page(others)
    return result


def cpu_by_thread(pid: int, pages: Pages, count: int) -> dict[str, Any]:
    """User and kernel CPU per page, main thread and the others, no profiler on."""
    before = common.threads_user_system(pid)
    started = time.monotonic()
    pages.get(count)
    seconds = time.monotonic() - started
    after = common.threads_user_system(pid)
    names = ("main_thread", "other_threads")
    result: dict[str, Any] = {"pages_per_s_unprofiled": round(count / seconds, 1)}
    for name, (user0, system0), (user1, system1) in zip(names, before, after, strict=True):
        result[f"{name}_user_us_per_page"] = round(1e6 * (user1 - user0) / count, 1)
        result[f"{name}_system_us_per_page"] = round(1e6 * (system1 - system0) / count, 1)
    return result


def profiled(pid: int, pages: Pages, count: int, out: Path) -> dict[str, Any]:
    """The server's main-thread CPU over ``count`` pages, by layer (cProfile)."""
    os.kill(pid, signal.SIGUSR1)
    started = time.monotonic()
    pages.get(count)
    rate = count / (time.monotonic() - started)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    layers = split.cprofile_layers(pstats.Stats(str(out)))
    return {
        "pages_per_s_profiled": rate,
        "main_thread_layers_pct": {k: round(v, 1) for k, v in layers},
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server (under callgrind, or profiled; ``--split``: one then the other),
    count or profile the pages."""
    backend = common.Backend(db=args.db)
    await backend.create()
    dumps = Path(tempfile.mkdtemp(prefix="served-page-"))
    profile_out = Path(f"{args.profile or dumps / 'profile'}.served")
    runs = ["callgrind", "profile"] if args.split else ["profile" if args.profile else "callgrind"]
    result: dict[str, Any] = {"db": args.db, "pages": args.pages, "messages": args.messages}
    result["deep"] = args.deep
    room: Room | None = None
    try:
        password = common.bench_password()
        backend.create_admin(password)
        for run in runs:
            if run == "callgrind":
                wrapper = common.under_callgrind(
                    dumps, sys.executable, "-m", "cmschat", threads=args.split
                )
            else:
                wrapper = [sys.executable, __file__, "--profiled-serve", str(profile_out), "--"]
            server = common.ServerProcess(backend, name=f"served-{run}", wrapper=wrapper)
            try:
                await server.start(wait_seconds=900)
                if room is None:
                    room = await prepared_room(server, backend, password, args)
                pages = Pages(server.port, room.paths, room.token)
                pages.get(30)  # warm: imports, caches, kept readers
                if run == "callgrind":
                    result.update(counted(server.pid, pages, args.pages, dumps, args.keep_dump))
                elif args.split:
                    result.update(cpu_by_thread(server.pid, pages, args.cpu_pages))
                    result.update(profiled(server.pid, pages, args.cpu_pages, profile_out))
                else:
                    result.update(profiled(server.pid, pages, args.pages, profile_out))
                pages.connection.close()
            finally:
                server.stop(timeout=300)
        if args.split and args.db == "sqlite" and room is not None:
            database = backend.database_url.partition(":///")[2]
            result["engine_variants"] = page_engine.measured(
                database, room.room_id, args.pages, room.cursors, env=backend.env()
            )
    finally:
        await backend.drop()
        shutil.rmtree(dumps, ignore_errors=True)
    return result


def profiled_serve(out: str, argv: list[str]) -> None:
    """``cmschat serve`` with a cProfile of its main thread between SIGUSR1 and SIGUSR2."""
    from cmschat.cli import main as cli_main

    profiler = cProfile.Profile(time.thread_time)

    def start(*_: object) -> None:
        profiler.enable()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out + ".part")
        os.replace(out + ".part", out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["cmschat", *argv]
    cli_main()


def main() -> None:
    """Parse, measure, print the figures as JSON."""
    if len(sys.argv) > 2 and sys.argv[1] == "--profiled-serve":
        profiled_serve(sys.argv[2], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--profile", metavar="PATH", help="cProfile the server instead")
    parser.add_argument("--keep-dump", metavar="PATH", help="keep the callgrind dump here")
    parser.add_argument("--split", action="store_true", help="count, profile, print the table")
    parser.add_argument("--cpu-pages", type=int, default=2000, help="--split's CPU pages")
    parser.add_argument("--messages", type=int, default=0, help="seed this many more first")
    parser.add_argument("--deep", action="store_true", help="pages below spread cursors")
    args = parser.parse_args()
    if args.deep and args.messages < 1000:
        parser.error("--deep needs --messages 1000 or more")
    result = asyncio.run(measure(args))
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    if args.split:
        print()
        print(split.served_table(result))


if __name__ == "__main__":
    main()
