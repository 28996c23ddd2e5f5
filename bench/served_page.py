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

Run::

    .venv/bin/python bench/served_page.py --db sqlite --pages 100
    .venv/bin/python bench/served_page.py --db mariadb --pages 100 --profile /tmp/served
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import httpx
import split

HANDOFF = "threads' handoff (GIL take/drop, pthread mutexes and conditions)"
_HANDOFF_FUNCTIONS = ("take_gil", "drop_gil", "pthread_mutex", "pthread_cond", "futex")
OBJECTS = (
    ("SQLite engine (libsqlite3)", ("libsqlite3",)),
    ("sqlite3 module (_sqlite3: statements, rows to Python objects)", ("_sqlite3",)),
    ("json module's C part (_json: the access line)", ("_json",)),
    ("MariaDB driver (asyncmy, C parts)", ("asyncmy",)),
    ("event loop (uvloop, libuv)", ("uvloop",)),
    ("orjson", ("orjson",)),
    ("HTTP parser (httptools, llhttp)", ("httptools",)),
    ("greenlet", ("greenlet",)),
    ("SQLAlchemy C extensions", ("sqlalchemy",)),
    ("libc / loader (malloc, memcpy, syscalls' wrappers)", ("libc.so", "libc-", "ld-linux")),
    ("Python interpreter (all Python code, builtins)", ("libpython", "bin/python")),
)
_NAMED = re.compile(r"\((\d+)\)\s*(.*)")


def object_of(path: str) -> str:
    """The group of a shared object's path."""
    for name, markers in OBJECTS:
        if any(marker in path for marker in markers):
            return name
    return f"other ({Path(path).name})"


def by_object(dump: Path) -> dict[str, int]:
    """Self instructions of a callgrind dump by shared object (read from the dump itself:
    ``ob=`` sets the object, a cost line after ``calls=`` is a call's inclusive cost)."""
    names: dict[str, str] = {}
    functions: dict[str, str] = {}
    groups: dict[str, int] = {}
    current = "?"
    handoff = False
    after_call = False
    with dump.open() as lines:
        for line in lines:
            if line.startswith(("ob=", "cob=")):
                found = _NAMED.match(line.partition("=")[2])
                if found is None:
                    continue
                key, name = found[1], found[2].strip()
                if name:
                    names[key] = name
                if line.startswith("ob="):
                    current = object_of(names.get(key, name))
            elif line.startswith(("fn=", "cfn=")):
                found = _NAMED.match(line.partition("=")[2])
                if found is None:
                    continue
                key, name = found[1], found[2].strip()
                if name:
                    functions[key] = name
                if line.startswith("fn="):
                    function = functions.get(key, name)
                    handoff = any(part in function for part in _HANDOFF_FUNCTIONS)
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    group = HANDOFF if handoff else current
                    groups[group] = groups.get(group, 0) + int(parts[1])
    return groups


def control(pid: int, *args: str) -> None:
    """``callgrind_control`` on the server."""
    tool = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run([tool, *args, str(pid)], check=True, capture_output=True)  # noqa: S603


class Pages:
    """A kept connection to the server and a signed-in page request."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.connection = http.client.HTTPConnection(common.HOST, port, timeout=600)
        self.path = path
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, count: int) -> None:
        """``count`` pages of 50, each checked whole."""
        for _ in range(count):
            self.connection.request("GET", self.path, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
            if response.status != 200 or body.count(b'"seq":') != 50:
                raise RuntimeError(f"{response.status} {body[:200]!r}")


async def prepared_room(server: common.ServerProcess, password: str) -> tuple[str, str]:
    """The bench admin's token and a room of 120 messages, every other one mentioning them."""
    async with httpx.AsyncClient(base_url=server.http, timeout=600) as client:
        login = {"username": common.ADMIN, "password": password}
        token = (await client.post("/api/v1/auth/login", json=login)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        room = (
            await client.post(
                "/api/v1/rooms",
                json={"kind": "group", "name": "served", "member_ids": []},
                headers=headers,
            )
        ).json()["id"]
        url = f"/api/v1/rooms/{room}/messages"
        for n in range(120):
            text = f"hello @{common.ADMIN} {n}" if n % 2 else f"seed {n}"
            response = await client.post(url, json={"content": text}, headers=headers)
            response.raise_for_status()
    return token, f"{url}?limit=50"


def counted(pid: int, pages: Pages, count: int, dumps: Path, keep: str | None) -> dict[str, Any]:
    """Instructions per page of the server under callgrind, in all and by object."""
    control(pid, "--zero")
    control(pid, "--instr=on")
    control(pid, "--zero")
    pages.get(count)
    control(pid, "--instr=off")
    control(pid, "--dump")
    dump = max(dumps.glob(f"cg.{pid}.out.*"), key=lambda f: f.stat().st_mtime_ns)
    groups = by_object(dump)
    if keep:
        shutil.copy(dump, keep)
    return {
        "instructions_per_page": round(sum(groups.values()) / count),
        "by_object_per_page": {
            k: round(v / count) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
    }


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
    """Start the server (under callgrind, or profiled), count or profile the pages."""
    backend = common.Backend(db=args.db)
    await backend.create()
    dumps = Path(tempfile.mkdtemp(prefix="served-page-"))
    profile_out = Path(f"{args.profile}.served") if args.profile else None
    if profile_out is None:
        wrapper = [
            shutil.which("valgrind") or "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={dumps}/cg.%p.out",
            sys.executable,
            "-m",
            "cmschat",
        ]
    else:
        wrapper = [sys.executable, __file__, "--profiled-serve", str(profile_out), "--"]
    server = common.ServerProcess(backend, name="served", wrapper=wrapper)
    result: dict[str, Any] = {"db": args.db, "pages": args.pages}
    try:
        password = common.bench_password()
        backend.create_admin(password)
        await server.start(wait_seconds=900)
        token, path = await prepared_room(server, password)
        pages = Pages(server.port, path, token)
        pages.get(30)  # warm: imports, caches, kept readers
        if profile_out is None:
            result.update(counted(server.pid, pages, args.pages, dumps, args.keep_dump))
        else:
            result.update(profiled(server.pid, pages, args.pages, profile_out))
        pages.connection.close()
    finally:
        server.stop(timeout=300)
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
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
