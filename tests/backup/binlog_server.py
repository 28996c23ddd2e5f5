"""A MariaDB server of the suite's own, with binary logging on (the machine's has it off).

A test module imports both fixtures: its ``database_url`` then replaces the suite's two.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bench import children
from cmschat.db.migrate import run_migrations
from cmschat.db.session import create_engine
from tests.processes import free_port
from tests.support import service_missing


def _ping(port: int) -> bool:
    result = subprocess.run(  # noqa: S603
        ["mariadb-admin", "--protocol=tcp", "-h127.0.0.1", f"-P{port}", "-uroot", "ping"],  # noqa: S607
        capture_output=True,
        check=False,
        preexec_fn=children.with_parent(),
    )
    return result.returncode == 0


@pytest.fixture(scope="session")
def binlog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mysql+asyncmy://root@127.0.0.1:PORT`` of a mariadbd with log_bin and ROW format."""
    for tool in ("mariadbd", "mariadb-install-db", "mariadb-binlog"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            service_missing(tool, FileNotFoundError(tool))
    base = tmp_path_factory.mktemp("binlog-server")
    data = base / "data"
    subprocess.run(  # noqa: S603
        [  # noqa: S607
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ],
        capture_output=True,
        check=True,
        preexec_fn=children.with_parent(),
    )
    port = free_port()
    server = subprocess.Popen(  # noqa: S603
        [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={data}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={base / 'sock'}",
            f"--pid-file={base / 'pid'}",
            f"--log-bin={data / 'binlog'}",
            "--binlog-format=ROW",
            "--server-id=1",
            f"--log-error={base / 'error.log'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=children.with_parent(),
    )
    try:
        deadline = time.monotonic() + 60
        while not _ping(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mariadbd did not start: {(base / 'error.log').read_text()[-2000:]}")
            time.sleep(0.2)  # polling a starting server: there is no event to wait on
        yield f"mysql+asyncmy://root@127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture
async def database_url(binlog_server: str) -> AsyncIterator[str]:
    """A migrated database on the binary-logging server (replaces the suite's two)."""
    name = f"cmschat_pitr_{secrets.token_hex(4)}"
    admin = create_engine(binlog_server + "/")
    try:
        async with admin.connect() as connection:
            await connection.execute(
                text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            )
        url = f"{binlog_server}/{name}"
        engine = create_engine(url)
        try:
            await run_migrations(engine)
        finally:
            await engine.dispose()
        yield url
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await admin.dispose()
