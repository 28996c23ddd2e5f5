"""Shared code for the benchmark tools: a scratch database, server processes, accounts.

Not a tool itself; see bench/README.md. Everything runs on 127.0.0.1 only.

* ``Backend`` makes a throw-away database (SQLite in a temporary directory, or a MariaDB
  database ``cmschat_bench_<random>`` that is dropped at the end) and the clean
  environment a ``cmschat`` process gets (no inherited ``CMSCHAT_*`` variables).
* ``ServerProcess`` runs ``.venv/bin/cmschat serve`` as a subprocess on a free port,
  waits for ``/healthz`` and reads its RSS and CPU time from ``/proc``.
* ``Api`` creates users through the admin API, logs them in and creates rooms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import children
import httpx

ROOT = Path(__file__).resolve().parent.parent
CMSCHAT = ROOT / ".venv" / "bin" / "cmschat"
HOST = "127.0.0.1"
MARIADB_URL = "mysql+asyncmy://root@127.0.0.1:3306"
REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = "benchadmin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
PROFILE_DIR = str(Path(tempfile.gettempdir()) / "cmschat-bench-profiles")
SERVE_WITH = ROOT / "bench" / "serve_with.py"
# The server under the app (bench/serve_with.py); no --server: what `cmschat serve` runs
# (uvicorn's httptools keeping header names, cmschat.api.transport).
SERVERS = ("uvicorn-h11", "uvicorn-httptools", "granian")

T = TypeVar("T")


def log(message: str) -> None:
    """Progress on stderr, with a wall-clock stamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def use_uvloop() -> None:
    """Run the load generator on uvloop when it is installed (less client-side CPU)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_before_and_during(
    baseline: Sequence[float], during: Sequence[float]
) -> dict[str, float]:
    """Send latency (sorted ms) with nothing else running, and while the measured job ran."""
    return {
        "send_p50_ms_before": percentile(baseline, 50),
        "send_p99_ms_before": percentile(baseline, 99),
        "send_p50_ms_during": percentile(during, 50),
        "send_p99_ms_during": percentile(during, 99),
        "sends_during": len(during),
    }


REQUEST_ACTIONS = ("healthz", "history", "send")
"""The requests the per-request CPU benches time (request_cpu.py, observability_overhead.py)."""


async def request_action(
    http: httpx.AsyncClient, action: str, url: str, headers: Any, n: int
) -> None:
    """One request of ``action``: ``/healthz``, the newest 50 messages of ``url``'s room, or
    the ``n``th message sent to it; anything but a success stops the bench."""
    if action == "healthz":
        response = await http.get("/healthz")
    elif action == "history":
        response = await http.get(url, params={"limit": 50}, headers=headers)
    else:
        response = await http.post(url, json={"content": f"m{n}"}, headers=headers)
    if response.status_code >= 300:
        raise RuntimeError(response.text)


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A tool's parser: its docstring's first paragraph says what it does, the rest how."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )


def add_profile_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--profile SECONDS`` (py-spy records ``what``) and ``--profile-dir``."""
    parser.add_argument(
        "--profile", type=int, default=0, metavar="SECONDS", help=f"py-spy record {what}"
    )
    parser.add_argument("--profile-dir", default=PROFILE_DIR)


def add_output_options(parser: argparse.ArgumentParser, *, keep: bool = True) -> None:
    """``--json PATH`` and, for tools that run servers in a temp dir, ``--keep``."""
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    if keep:
        parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")


def add_server_option(parser: argparse.ArgumentParser) -> None:
    """``--server``: which server runs the app (compare them on the same benchmark)."""
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=None,
        help="server under the app (default: whatever `cmschat serve` runs)",
    )


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: worker processes per server (more than one needs ``--redis``)."""
    parser.add_argument("--workers", type=int, default=1, help="cmschat serve --workers")
    parser.add_argument("--redis", action="store_true", help=f"use Redis ({REDIS_URL})")


def workers_setup(args: argparse.Namespace) -> dict[str, Any]:
    """``environment()``'s keyword arguments for ``--workers`` and ``--redis``."""
    return {
        "redis_url": REDIS_URL if args.redis else None,
        "extra_env": {"CMSCHAT_WORKERS": str(args.workers)},
    }


def server_wrapper(server: str | None) -> list[str] | None:
    """The command that starts ``SERVER serve ...`` (None: plain ``cmschat``)."""
    if server is None:
        return None
    return [sys.executable, str(SERVE_WITH), server]


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (granian runs the app in a child process)."""
    pids, index = [pid], 0
    while index < len(pids):
        for task in os.listdir(f"/proc/{pids[index]}/task"):
            path = f"/proc/{pids[index]}/task/{task}/children"
            with contextlib.suppress(OSError), open(path) as children:
                pids.extend(int(child) for child in children.read().split())
        index += 1
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants."""
    return sum(cpu_seconds(one) for one in process_tree(pid))


def machine() -> str:
    """One line about the machine: cores and memory."""
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    python = sys.version.split()[0]
    return f"{os.cpu_count()} cores, {mem_kib / 1024 / 1024:.1f} GiB RAM, Python {python}"


# -- /proc ------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc/PID/status), KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (utime + stime of /proc/PID/stat)."""
    return sum(user_system_seconds(pid))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU time a process has used (/proc/PID/stat)."""
    return _user_system(f"/proc/{pid}/stat")


def _user_system(stat_path: str) -> tuple[float, float]:
    with open(stat_path) as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def threads_user_system(pid: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """User and system CPU seconds of a process's main thread, and of its other threads
    together (/proc/PID/task/TID/stat)."""
    main, others = [0.0, 0.0], [0.0, 0.0]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            user, system = _user_system(f"/proc/{pid}/task/{tid}/stat")
        except FileNotFoundError:
            continue  # a thread gone meanwhile
        into = main if int(tid) == pid else others
        into[0] += user
        into[1] += system
    return (main[0], main[1]), (others[0], others[1])


def tree_system_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of a process and its descendants."""
    return sum(user_system_seconds(one)[1] for one in process_tree(pid))


def open_fds(pid: int) -> int:
    """Number of open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def find_pids(names: Sequence[str] = ("mariadbd", "mysqld", "redis-server")) -> dict[str, int]:
    """Pids of other services whose CPU use matters on a shared 2-core machine (read-only)."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if name in names and name not in found:
            found[name] = int(entry)
    return found


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named pid (missing ones left out)."""
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = cpu_seconds(pid)
    return out


class CpuWindow:
    """CPU used during a measured window: by the server, this bench, other services, the rest."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.others = find_pids()
        self.server0 = tree_cpu_seconds(server_pid)
        self.server_system0 = tree_system_seconds(server_pid)
        self.others0 = cpu_of(self.others)
        self.machine0, self.bench0 = machine_cpu_seconds(), self_cpu_seconds()
        self.fields: dict[str, Any] = {}

    def close(self, elapsed: float) -> None:
        """End the window (call right after the measured load)."""
        server = tree_cpu_seconds(self.server_pid) - self.server0
        system = tree_system_seconds(self.server_pid) - self.server_system0
        bench = self_cpu_seconds() - self.bench0
        machine = machine_cpu_seconds() - self.machine0
        others1 = cpu_of(self.others)
        self.fields = {
            "server_cpu_s": server,
            # The kernel's part (socket reads and writes, SQLite's file reads, wake-ups).
            "server_system_cpu_s": system,
            "server_system_cpu_pct_of_server": 100 * system / server if server else None,
            "server_cpu_pct_of_run": 100 * server / elapsed,
            "bench_cpu_pct_of_run": 100 * bench / elapsed,
            "rest_of_machine_cpu_pct_of_run": 100 * (machine - server - bench) / elapsed,
            "other_services_cpu_pct_of_run": {
                k: 100 * (others1[k] - v) / elapsed for k, v in self.others0.items() if k in others1
            },
        }


def report(result: dict[str, Any], profiler: Profiler | None) -> dict[str, Any]:
    """Print the results table (and the profile summary, if one was taken); returns result."""
    print_table((k, v) for k, v in result.items())
    if profiler is not None:
        summary = profiler.summary()
        result["profile"] = summary
        print_profile(str(profiler.out), summary)
    return result


def source_state() -> str:
    """The commit the server code came from, and whether src/ had local changes."""
    try:
        head = subprocess.run(  # noqa: S603 - fixed arguments, read-only git commands
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
            preexec_fn=children.with_parent(),
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
            preexec_fn=children.with_parent(),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted src changes" if dirty else head


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used (busy jiffies of /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def self_cpu_seconds() -> float:
    """CPU time used by this (load generator) process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- database and environment ----------------------------------------------------------


def under_callgrind(dumps: str | Path, *command: str, threads: bool = False) -> list[str]:
    """``command`` under ``valgrind --tool=callgrind``, counting nothing until the counted
    stretch asks (``--instr-atstart=no``), one dump per process in ``dumps``; ``threads``:
    one per thread too."""
    return [
        shutil.which("valgrind") or "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        *(["--separate-threads=yes"] if threads else []),
        f"--callgrind-out-file={dumps}/cg.%p.out",
        *command,
    ]


@dataclass
class Backend:
    """A scratch database and the environment every cmschat process of the run shares."""

    db: str  # "sqlite" or "mariadb"
    redis_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(init=False)
    database_url: str = field(init=False)
    mariadb_name: str | None = field(init=False, default=None)
    secret_key: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(48))

    def __post_init__(self) -> None:
        if self.db not in ("sqlite", "mariadb"):
            raise ValueError("db must be sqlite or mariadb")
        self.workdir = Path(tempfile.mkdtemp(prefix="cmschat-bench-"))
        if self.db == "sqlite":
            self.database_url = f"sqlite+aiosqlite:///{self.workdir / 'var' / 'cmschat.db'}"
        else:
            self.mariadb_name = f"cmschat_bench_{secrets.token_hex(4)}"
            self.database_url = f"{MARIADB_URL}/{self.mariadb_name}"

    def env(self) -> dict[str, str]:
        """A clean environment: only what a process needs, plus our CMSCHAT_* settings."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "CMSCHAT_ENVIRONMENT": "test",
            "CMSCHAT_SECRET_KEY": self.secret_key,
            "CMSCHAT_AUTH__BCRYPT_ROUNDS": "4",
            "CMSCHAT_DATA_DIR": str(self.workdir / "var"),
            "CMSCHAT_DATABASE_URL": self.database_url,
            "CMSCHAT_LOG_FORMAT": "json",
            # Load tools send far faster than a person: the per-user send rate is off.
            "CMSCHAT_CHAT__SEND_RATE": "0",
        }
        if self.redis_url:
            env["CMSCHAT_REDIS_URL"] = self.redis_url
        # The virtualenv's editable install points at one checkout's src/: a worktree's
        # (or a "before" copy's) src/ on PYTHONPATH must reach the servers too.
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        # "{database_url}" in a value: this run's database (a replica of itself, history.py).
        env.update(
            {
                name: value.replace("{database_url}", self.database_url)
                for name, value in self.extra_env.items()
            }
        )
        return env

    async def create(self) -> None:
        """Create the MariaDB database (SQLite files appear on first use)."""
        if self.mariadb_name is not None:
            await self._mariadb_execute(
                f"CREATE DATABASE `{self.mariadb_name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )

    async def drop(self, keep_workdir: bool = False) -> None:
        """Drop the MariaDB database and remove the working directory."""
        if self.mariadb_name is not None:
            with contextlib.suppress(Exception):
                await self._mariadb_execute(f"DROP DATABASE IF EXISTS `{self.mariadb_name}`")
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def _mariadb_execute(self, statement: str) -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(MARIADB_URL + "/", isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """Run ``cmschat ARGS`` with the clean environment; its stdout (raises on failure)."""
        done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
            [str(CMSCHAT), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.workdir,
            timeout=timeout,
            check=False,
            preexec_fn=children.with_parent(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"cmschat {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def create_admin(self, password: str) -> None:
        """``cmschat user create benchadmin --role admin --password-stdin`` (also migrates)."""
        self.cli(
            "user", "create", ADMIN, "--role", "admin", "--password-stdin", stdin=password + "\n"
        )


# -- server processes ------------------------------------------------------------------


class ServerProcess:
    """One ``cmschat serve`` subprocess on a free loopback port."""

    def __init__(
        self, backend: Backend, name: str = "server", wrapper: list[str] | None = None
    ) -> None:
        self.backend = backend
        self.wrapper = wrapper
        self.name = name
        self.port = free_port()
        self.log_path = backend.workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None  # noqa: S101
        return self.process.pid

    @property
    def http(self) -> str:
        """Base URL."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws(self) -> str:
        """The WebSocket endpoint."""
        return f"ws://{HOST}:{self.port}/api/v1/ws"

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 - our own console script
                [
                    *(self.wrapper or [str(CMSCHAT)]),
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.backend.env(),
                cwd=self.backend.workdir,
                start_new_session=True,
                preexec_fn=children.with_parent(),
            )

    async def start(self, wait_seconds: float = 60) -> None:
        """Start and wait until /healthz answers."""
        self._spawn()
        assert self.process is not None  # noqa: S101
        deadline = time.monotonic() + wait_seconds
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited at start; see {self.log_path}:\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.http + "/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not answer /healthz; see {self.log_path}")
                await asyncio.sleep(0.2)

    def rss_kib(self) -> int:
        """Server RSS, KiB (summed over its worker processes, if any)."""
        return sum(rss_kib(pid) for pid in process_tree(self.pid))

    def cpu_seconds(self) -> float:
        """Server CPU seconds so far (its worker processes included, if any)."""
        return tree_cpu_seconds(self.pid)

    def alive(self) -> bool:
        """Still running."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 45) -> int | None:
        """SIGTERM, wait (graceful shutdown closes WebSockets with 1012), then SIGKILL."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout}s; killing pid {self.pid}")
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def problems(self, limit: int = 20) -> list[str]:
        """Log lines at WARNING or above, and tracebacks (possible server bugs)."""
        found = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            if any(
                marker in line
                for marker in (
                    '"log.level":"warning"',
                    '"log.level":"error"',
                    '"log.level":"critical"',
                    "Traceback",
                    "ERROR",
                    "CRITICAL",
                )
            ):
                found.append(line[:600])
        return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


# -- the HTTP API ----------------------------------------------------------------------


async def bounded(concurrency: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run job factories with at most ``concurrency`` at a time; results in order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


@dataclass
class BenchUser:
    """A created, signed-in account."""

    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """Accounts and rooms through the HTTP API of one server."""

    def __init__(self, base_url: str, password: str) -> None:
        self.base = base_url + "/api/v1"
        self.password = password
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.client = httpx.AsyncClient(timeout=60, limits=limits)
        self.admin_headers: dict[str, str] = {}

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def login(self, username: str) -> BenchUser:
        """Sign in; the user and its token."""
        response = await self.client.post(
            self.base + "/auth/login", json={"username": username, "password": self.password}
        )
        response.raise_for_status()
        body = response.json()
        return BenchUser(id=body["user"]["id"], username=username, token=body["access_token"])

    async def login_admin(self) -> BenchUser:
        """Sign in as the bench admin (created with the CLI)."""
        admin = await self.login(ADMIN)
        self.admin_headers = admin.headers
        return admin

    async def create_user(self, username: str) -> int:
        """POST /admin/users: a member account with the shared bench password."""
        response = await self.client.post(
            self.base + "/admin/users",
            headers=self.admin_headers,
            json={"username": username, "password": self.password, "role": "member"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"create {username}: {response.status_code} {response.text[:200]}")
        return int(response.json()["id"])

    async def create_users(
        self, count: int, prefix: str = "u", concurrency: int = 16
    ) -> list[BenchUser]:
        """Create ``count`` members and sign each in (bounded concurrency)."""
        names = [f"{prefix}{index:05d}" for index in range(count)]
        started = time.monotonic()
        await bounded(concurrency, [lambda n=n: self.create_user(n) for n in names])
        log(f"created {count} users in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        users = await bounded(concurrency, [lambda n=n: self.login(n) for n in names])
        log(f"signed in {count} users in {time.monotonic() - started:.1f}s")
        return users

    async def create_room(self, owner: BenchUser, members: Sequence[BenchUser], name: str) -> int:
        """POST /rooms: a group room made by ``owner`` with ``members``."""
        response = await self.client.post(
            self.base + "/rooms",
            headers=owner.headers,
            json={
                "kind": "group",
                "name": name,
                "member_ids": [m.id for m in members if m.id != owner.id],
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"create room {name}: {response.status_code} {response.text[:200]}")
        return int(response.json()["id"])


def bench_password() -> str:
    """A per-run password that passes the password policy."""
    return "Bench-" + secrets.token_urlsafe(12)


@contextlib.asynccontextmanager
async def environment(
    db: str,
    *,
    servers: int = 1,
    redis_url: str | None = None,
    keep: bool = False,
    extra_env: dict[str, str] | None = None,
    wrapper: list[str] | None = None,
    server: str | None = None,
) -> AsyncIterator[tuple[Backend, list[ServerProcess], Api]]:
    """A scratch database, the bench admin, ``servers`` running servers and an Api.

    Everything is torn down at the end (servers stopped, MariaDB database dropped, temp
    directory removed unless ``keep``). Server problems found in the logs are printed.
    """
    backend = Backend(db=db, redis_url=redis_url, extra_env=extra_env or {})
    wrapper = wrapper or server_wrapper(server)
    password = bench_password()
    procs: list[ServerProcess] = []
    api: Api | None = None
    try:
        await backend.create()
        started = time.monotonic()
        backend.create_admin(password)
        took = time.monotonic() - started
        log(f"{db}: migrated and created {ADMIN} in {took:.1f}s ({backend.workdir})")
        procs = [
            ServerProcess(backend, name=f"server{index + 1}", wrapper=wrapper)
            for index in range(servers)
        ]
        for proc in procs:
            await proc.start()
            log(f"{proc.name} pid {proc.pid} on {proc.http}")
        api = Api(procs[0].http, password)
        await api.login_admin()
        yield backend, procs, api
    finally:
        if api is not None:
            await api.close()
        for proc in procs:
            code = proc.stop()
            log(f"{proc.name} stopped, exit status {code}")
            problems = proc.problems()
            if problems:
                log(f"{proc.name}: {len(problems)} warning/error log lines (log {proc.log_path}):")
                for line in problems:
                    print("    " + line, file=sys.stderr)
        await backend.drop(keep_workdir=keep)


def print_table(rows: Iterable[tuple[str, Any]]) -> None:
    """Aligned ``name: value`` lines on stdout."""
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        if isinstance(value, bool):
            value = str(value)
        elif isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"{name.ljust(width)}  {value}")
    sys.stdout.flush()


# -- profiling -------------------------------------------------------------------------

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


# A thread whose top frame is one of these is waiting, not working: py-spy's own idle
# detection does not work in this container, so such samples are left out here.
IDLE_MARKERS = (
    "threading.py:Condition.wait",
    "threading.py:Event.wait",
    "queue.py:Queue.get",
    "epoll_wait",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "sem_clockwait",
    "sem_timedwait",
    "do_futex_wait",
    "futex_wait",
    "__futex_abstimed_wait",
    "take_gil",
)


class Profiler:
    """``py-spy record`` of a server for a while, in raw (collapsed stack) format.

    ``summary()`` reads the stacks back: per function (``file:function``), the share of
    samples where it is on top of the stack (self) and anywhere in it (inclusive).
    """

    def __init__(self, pid: int, seconds: int, out: Path, rate: int = 100) -> None:
        self.out = out
        self.seconds = seconds
        self.rate = rate
        if not PY_SPY.exists():
            raise RuntimeError(f"{PY_SPY} not found: .venv/bin/pip install py-spy")
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "-o",
                str(out),
                # BENCH_PYSPY_NATIVE=1: C frames too (sqlite3, libc), to see inside the driver
                *(["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") == "1" else []),
                # BENCH_PYSPY_GIL=1: only the thread holding the GIL, i.e. Python at work (a
                # driver thread blocked in a C call or an idle queue is left out)
                *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") == "1" else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=children.with_parent(),
        )

    def wait(self) -> None:
        """Wait for py-spy to finish writing."""
        try:
            self.process.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)

    @staticmethod
    def _name(frame: str) -> str:
        # "function (path/to/file.py:123)" -> "file.py:function" (cmschat paths kept longer)
        if frame.endswith(")") and " (" in frame:
            function, _, where = frame[:-1].rpartition(" (")
            path = where.rsplit(":", 1)[0]
            if "/cmschat/" in path:
                path = "cmschat/" + path.split("/cmschat/", 1)[1]
            elif "site-packages/" in path:
                path = path.split("site-packages/", 1)[1]
            elif path.startswith("/"):
                path = path.rsplit("/", 1)[-1]
            return f"{path}:{function}"
        return frame

    def summary(self, top: int = 15) -> dict[str, Any]:
        """Samples, and the top functions by self and inclusive share."""
        self_counts: dict[str, int] = {}
        incl_counts: dict[str, int] = {}
        package_counts: dict[str, int] = {}
        total = idle = 0
        try:
            lines = self.out.read_text(errors="replace").splitlines()
        except OSError:
            return {"samples": 0, "self": [], "inclusive": [], "packages": []}
        for line in lines:
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [self._name(f) for f in stack.split(";")]
            # py-spy prints the thread first ("process ..;thread ..;") when asked; skip such
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            if any(marker in frames[-1] for marker in IDLE_MARKERS):
                idle += count
                continue
            total += count
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
            package = frames[-1].split("/", 1)[0] if "/" in frames[-1] else "stdlib/other"
            package_counts[package] = package_counts.get(package, 0) + count
            for name in set(frames):
                incl_counts[name] = incl_counts.get(name, 0) + count

        def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
            items = sorted(counts.items(), key=lambda item: -item[1])[:top]
            return [(name, 100 * count / total) for name, count in items] if total else []

        return {
            "samples": total,
            "idle_samples_left_out": idle,
            "busy_pct": 100 * total / (self.seconds * self.rate),
            "self": ranked(self_counts),
            # The application's own functions, wherever they are in the stack (the entry
            # point and the request middleware are on every stack, so they are left out).
            "inclusive": ranked(
                {
                    k: v
                    for k, v in incl_counts.items()
                    if k.startswith("cmschat/")
                    and not k.startswith(("cmschat/cli.py", "cmschat/observability/middleware.py"))
                }
            ),
            "packages": ranked(package_counts),
        }


def print_profile(label: str, summary: dict[str, Any]) -> None:
    """The hot spots of a profile, on stdout."""
    print(
        f"\nprofile {label}: {summary['samples']} samples "
        f"(~{summary.get('busy_pct', 0):.0f}% of one core; "
        f"{summary.get('idle_samples_left_out', 0)} idle-thread samples left out)"
    )
    print("  top self (function on top of the stack):")
    for name, pct in summary["self"]:
        print(f"    {pct:5.1f}%  {name}")
    print("  self by package (top-level folder of the file on top of the stack):")
    for name, pct in summary.get("packages", []):
        print(f"    {pct:5.1f}%  {name}")
    print("  cmschat functions, inclusive (anywhere in the stack):")
    for name, pct in summary["inclusive"]:
        print(f"    {pct:5.1f}%  {name}")
    sys.stdout.flush()


# -- HTTP load loops -------------------------------------------------------------------


@dataclass
class LoadResult:
    """What a timed HTTP load loop saw in its measured window."""

    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, measured window, ok only
    bad_samples: list[str] = field(default_factory=list)


async def timed_load(
    workers: int,
    request: Callable[[int], Awaitable[tuple[int, str | None]]],
    *,
    warmup: float,
    duration: float,
) -> LoadResult:
    """Run ``request(worker)`` in a loop on ``workers`` tasks for warmup + duration seconds.

    ``request`` returns (status, problem or None); only requests that start and end in the
    measured window count.
    """
    result = LoadResult()
    start = time.perf_counter() + warmup
    end = start + duration

    async def worker(index: int) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                status, problem = await request(index)
            except httpx.HTTPError as exc:
                status, problem = -1, type(exc).__name__
            t1 = time.perf_counter()
            if t0 < start or t1 > end:
                continue
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if problem is None:
                result.ok += 1
                result.latencies.append(t1 - t0)
            else:
                result.errors[problem] = result.errors.get(problem, 0) + 1

    await asyncio.gather(*(worker(i) for i in range(workers)))
    result.latencies.sort()
    return result
