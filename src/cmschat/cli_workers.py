"""``cmschat serve --workers N``: N worker processes on one listening socket, supervised.

The parent migrates, binds the socket and starts the workers (spawned, so each imports
prometheus-client after ``PROMETHEUS_MULTIPROC_DIR`` is set); it serves nothing itself.
A worker that dies is logged and started again; SIGTERM (or SIGINT) is passed to every
worker, which drains as a single process does, and the parent waits for them within the
shutdown grace. Workers exit with the parent even if it is killed outright.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Literal

from prometheus_client import multiprocess
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.cpu_cores import usable_cores
from cmschat.errors import CmschatError
from cmschat.observability.metrics import MULTIPROCESS_ENV
from cmschat.settings import DatabaseSettings, Settings

log = logging.getLogger("cmschat.workers")

RESTART_PAUSE = 1.0
"""A worker is started again no sooner than this after its previous start (no crash loop
spinning a core)."""
STOP_MARGIN = 5.0
"""Beyond the shutdown grace, time for a worker to close its pools and exit."""


def resolve_workers(requested: int | Literal["auto"], settings: Settings) -> int:
    """How many workers to run; several only where they share the database and the broker."""
    shared = not settings.is_sqlite and settings.redis_url is not None
    if requested == "auto":
        return usable_cores() if shared else 1
    if requested > 1 and not shared:
        # In-process fan-out reaches only the process that stored the message, and SQLite
        # has one writer: other workers' clients would miss messages live.
        raise CmschatError(
            f"--workers {requested} needs MariaDB and Redis (CMSCHAT_DATABASE_URL, "
            "CMSCHAT_REDIS_URL): on SQLite with in-process fan-out one worker serves"
        )
    return requested


CONNECTION_MARGIN = 10
"""MariaDB connections left for everything but the workers: ``cmschat`` commands, backups,
replication, an operator's client."""


async def connection_budget(engine: AsyncEngine, count: int, pool: DatabaseSettings) -> str | None:
    """A one-line warning when ``count`` workers' full pools (sized by ``pool``) would not
    fit the database's connection limit (None: they fit, or the database is SQLite)."""
    if engine.dialect.name == "sqlite":
        return None
    async with engine.connect() as connection:
        row = (
            await connection.execute(text("SELECT @@max_connections, @@max_user_connections"))
        ).one()
    limits = [int(value) for value in row if value]  # max_user_connections 0: no limit
    limit = min(limits)
    per_worker = pool.per_process
    if count * per_worker <= limit - CONNECTION_MARGIN:
        return None
    return (
        f"--workers {count} x {per_worker} database connections each (pool {pool.pool_size} + "
        f"overflow {pool.pool_overflow}) = {count * per_worker} exceed MariaDB's connection limit "
        f"{limit} minus {CONNECTION_MARGIN} kept for commands and tools: under load requests "
        "would fail with 'Too many connections'; raise max_connections, lower --workers "
        "(CMSCHAT_WORKERS) or the pool (CMSCHAT_DATABASE__POOL_SIZE, __POOL_OVERFLOW), "
        "and count the other instances on this database too"
    )


async def warn_if_over_budget(engine: AsyncEngine, count: int, pool: DatabaseSettings) -> None:
    """Log the connection budget's warning, if any, before the workers start.

    A warning, not a refusal: pools open connections only as load needs them, this check
    cannot see the other instances sharing the limit, and refusing would turn a bigger
    machine under ``--workers auto`` into an outage at deploy time.
    """
    warning = await connection_budget(engine, count, pool)
    if warning is not None:
        log.warning(warning)


@contextmanager
def multiprocess_metrics() -> Iterator[Path]:
    """A fresh directory for the workers' metric samples, for this run of ``serve``."""
    configured = os.environ.get(MULTIPROCESS_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        # Samples of a previous run would be summed with this one's.
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="cmschat-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(directory)
    try:
        yield directory
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(directory, ignore_errors=True)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.set_inheritable(True)
    return listener


def _die_with_parent(parent: int) -> None:
    # Linux: the kernel kills this worker when the supervisor dies, even by SIGKILL, so no
    # orphan keeps serving the port. Elsewhere the supervisor's SIGTERM is the only way.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_main(index: int, host: str, port: int, listener: socket.socket, parent: int) -> None:
    """One worker process: settings, logging and the app, serving on the shared socket."""
    _die_with_parent(parent)
    from cmschat.cli_server import serve_process
    from cmschat.observability.logging import configure_logging, set_worker
    from cmschat.settings import load_settings

    settings = load_settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    set_worker(index)
    # SIGINT from a terminal reaches the whole process group; the supervisor turns it into
    # one SIGTERM per worker, so a worker ignores it rather than stop twice.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve_process(settings, host=host, port=port, listener=listener, worker=index)


class Supervisor:
    """Starts ``count`` workers, restarts any that dies, stops them all on SIGTERM."""

    def __init__(
        self, *, count: int, host: str, port: int, listener: socket.socket, grace: float
    ) -> None:
        self.count = count
        self.host = host
        self.port = port
        self.listener = listener
        self.grace = grace
        self.workers: dict[int, BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(index, self.host, self.port, self.listener, os.getpid()),
            name=f"cmschat-worker-{index}",
        )
        process.start()
        self.workers[index] = process
        self.started[index] = time.monotonic()
        log.info("worker %d started (pid %s)", index, process.pid)

    def _replace_dead(self) -> None:
        now = time.monotonic()
        for index, process in list(self.workers.items()):
            if process.exitcode is None or self.stopping:
                continue
            if now - self.started[index] < RESTART_PAUSE:
                continue
            log.error(
                "worker %d (pid %s) exited with status %s; starting it again",
                index,
                process.pid,
                process.exitcode,
            )
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            process.close()
            self._start(index)

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop every worker gracefully."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        for index in range(1, self.count + 1):
            self._start(index)
        while not self.stopping:
            running = [p.sentinel for p in self.workers.values() if p.exitcode is None]
            wait(running, timeout=0.5)
            self._replace_dead()
        self.stop_all()

    def stop_all(self) -> None:
        """Stop listening, then stop every worker within the grace (killed past it)."""
        log.info("stopping %d workers", len(self.workers))
        # The workers close their copies as they begin to drain; ours would keep the port
        # listening, and connections made meanwhile would wait unaccepted, then be reset.
        # Closed, the port refuses them at once (a proxy tries another instance).
        self.listener.close()
        for process in self.workers.values():
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace + STOP_MARGIN
        for index, process in self.workers.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker %d did not stop within the grace; killing it", index)
                process.kill()
                process.join()
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]


def serve_workers(settings: Settings, *, count: int, host: str, port: int) -> None:
    """Run ``count`` workers on ``host:port`` until SIGTERM."""
    with multiprocess_metrics(), bind(host, port) as listener:
        Supervisor(
            count=count,
            host=host,
            port=port,
            listener=listener,
            grace=settings.shutdown_grace_seconds,
        ).run()
