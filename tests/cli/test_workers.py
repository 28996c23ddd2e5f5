"""``cmschat serve --workers N``: refused where workers cannot share, supervised where they can."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed

from bench import children as child_processes
from cmschat.cli_support import open_database
from cmschat.cli_workers import (
    CONNECTION_MARGIN,
    Supervisor,
    bind,
    connection_budget,
    resolve_workers,
)
from cmschat.cpu_cores import usable_cores
from cmschat.db.session import POOL_OVERFLOW, POOL_SIZE, create_engine
from cmschat.settings import DatabaseSettings, load_settings
from tests import support
from tests.cli.test_cli import FAST, assert_one_line_error
from tests.processes import clean_env, cmschat, running_server
from tests.realtime.test_multi_instance import USERS, cluster_env, live, login  # noqa: F401 - fixture
from tests.realtime.wsclient import WsClient, token_of, ws_client


def test_auto_is_one_per_core_on_mariadb_with_redis_and_one_on_sqlite() -> None:
    shared = load_settings(
        database_url="mysql+asyncmy://u:p@db/chat", redis_url="redis://r", secret_key="x" * 48
    )
    assert resolve_workers("auto", shared) == usable_cores()
    assert resolve_workers(3, shared) == 3
    assert resolve_workers("auto", load_settings(environment="test")) == 1


def test_zero_workers_is_a_one_line_error(tmp_path: Path) -> None:
    result = cmschat(tmp_path, "serve", "--workers", "0", env=clean_env(**FAST))
    assert_one_line_error(result, "--workers")


def test_several_workers_on_sqlite_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    result = cmschat(tmp_path, "serve", "--workers", "2", env=clean_env(**FAST))
    assert_one_line_error(result, "--workers 2 needs MariaDB and Redis", status=1)
    assert not (tmp_path / "var").exists()


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (its workers)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    # multiprocessing's resource tracker is a child too, but no worker.
    return {
        int(part)
        for part in text.split()
        if b"resource_tracker" not in Path(f"/proc/{part}/cmdline").read_bytes()
    }


def busiest_worker(supervisor: int, port: int) -> tuple[int, int]:
    """The worker of ``supervisor`` holding the most client connections on ``port``, and
    how many it holds."""
    workers = children(supervisor)
    listed = subprocess.run(  # noqa: S603 - a fixed command, our own port number
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=child_processes.with_parent(),
    ).stdout
    held = Counter(int(pid) for pid in re.findall(r"pid=(\d+)", listed) if int(pid) in workers)
    return held.most_common(1)[0] if held else (min(workers), 0)


def wait_for(condition: object, within: float = 30.0) -> None:
    """Poll ``condition()`` until true (a process appearing is not an awaitable event)."""
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def stored(base_url: str) -> float:
    """The messages-stored counter as one scrape of /metrics reports it."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cmschat_messages_stored_total"
    )


def open_websockets(base_url: str) -> float:
    """WebSocket connections open, as one scrape of /metrics reports them (all workers)."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cmschat_websocket_connections_open"
    )


async def still_open(sockets: list[WsClient]) -> int:
    """How many of ``sockets`` still answer a ping."""
    alive = 0
    for ws in sockets:
        try:
            await ws.ping()
        except (ConnectionClosed, TimeoutError):
            continue
        alive += 1
    return alive


@pytest.mark.slow
def test_two_workers_sum_metrics_restart_a_dead_worker_and_stop_together(
    cluster_env: dict[str, str],  # noqa: F811 - fixture
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, cluster_env, "workers", workers=2) as server:
        wait_for(lambda: len(children(server.process.pid)) >= 2)
        workers = sorted(children(server.process.pid))
        with httpx.Client(base_url=server.base_url, timeout=30) as http:

            async def headers() -> dict[str, str]:
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as a:
                    return await login(a, USERS[0])

            auth = asyncio.run(headers())
            room = http.post(
                "/api/v1/rooms", headers=auth, json={"kind": "group", "name": "w", "member_ids": []}
            ).json()["id"]
        sent = 0
        # A stopped worker accepts nothing: each batch is served by the one left running.
        for paused in workers:
            os.kill(paused, signal.SIGSTOP)
            try:
                for _ in range(5):
                    with httpx.Client(base_url=server.base_url, timeout=30) as fresh:
                        made = fresh.post(
                            f"/api/v1/rooms/{room}/messages",
                            headers=auth,
                            json={"content": "hi", "client_id": f"m{sent}"},
                        )
                    assert made.status_code == 201, made.text
                    sent += 1
            finally:
                os.kill(paused, signal.SIGCONT)
        for _ in range(4):  # whichever worker answers, it reports the sum
            assert stored(server.base_url) == sent

        async def kill_a_worker_holding_websockets() -> None:
            async with contextlib.AsyncExitStack() as stack:
                sockets = [
                    await stack.enter_async_context(ws_client(live(server), token_of(auth)))
                    for _ in range(6)
                ]
                assert open_websockets(server.base_url) == len(sockets)
                port = int(server.base_url.rsplit(":", 1)[1])
                victim, held = busiest_worker(server.process.pid, port)
                assert held > 0
                os.kill(victim, signal.SIGKILL)
                wait_for(lambda: len(children(server.process.pid) - set(workers)) >= 1)
                alive = await still_open(sockets)
                assert alive < len(sockets)
                # The dead worker's open connections are not counted any more.
                assert open_websockets(server.base_url) == alive

        asyncio.run(kill_a_worker_holding_websockets())
        assert "starting it again" in server.stderr()
        assert httpx.get(server.base_url + "/readyz", timeout=10).status_code == 200
        assert stored(server.base_url) == sent

        assert server.stop() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


async def test_workers_whose_pools_exceed_max_connections_get_a_one_line_warning() -> None:
    support.mariadb_available()
    engine = create_engine(support.MARIADB_SERVER)
    try:
        async with engine.connect() as connection:
            limit = int(await connection.scalar(text("SELECT @@max_connections")) or 0)
        fits = (limit - CONNECTION_MARGIN) // (POOL_SIZE + POOL_OVERFLOW)
        assert await connection_budget(engine, fits, DatabaseSettings()) is None
        warning = await connection_budget(engine, fits + 1, DatabaseSettings())
        # A smaller pool set by the operator lets more workers fit, and is what is named.
        small = DatabaseSettings(pool_size=2, pool_overflow=1)
        assert await connection_budget(engine, (limit - CONNECTION_MARGIN) // 3, small) is None
        over = await connection_budget(engine, (limit - CONNECTION_MARGIN) // 3 + 1, small)
    finally:
        await engine.dispose()
    assert warning is not None and over is not None
    assert "\n" not in warning
    assert "x 3 database connections each (pool 2 + overflow 1)" in over
    assert f"--workers {fits + 1} x {POOL_SIZE + POOL_OVERFLOW} database connections" in warning
    assert f"connection limit {limit}" in warning
    assert "raise max_connections, lower --workers (CMSCHAT_WORKERS) or the pool" in warning


def test_a_stopping_supervisor_stops_listening_at_once() -> None:
    """Connections made while the workers drain are refused (a proxy retries elsewhere),
    not left in the listen backlog to be reset when the supervisor exits."""
    listener = bind("127.0.0.1", 0)
    listener.listen(16)  # as the workers' servers do on the shared socket
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # listening: the kernel completes the handshake into the backlog
    Supervisor(count=0, host="127.0.0.1", port=port, listener=listener, grace=1).stop_all()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_the_pool_is_sized_by_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    support.mariadb_available()
    monkeypatch.setenv("CMSCHAT_DATABASE__POOL_SIZE", "4")
    monkeypatch.setenv("CMSCHAT_DATABASE__POOL_OVERFLOW", "7")
    settings = load_settings(
        environment="test", database_url=support.MARIADB_SERVER, data_dir=tmp_path
    )
    assert (settings.database.pool_size, settings.database.pool_overflow) == (4, 7)
    async with open_database(settings) as db:
        pool = db.engine.pool
        assert pool.size() == 4  # type: ignore[attr-defined]
        assert pool._max_overflow == 7  # type: ignore[attr-defined]
