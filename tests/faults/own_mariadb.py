"""A mariadbd of the suite's own on a spare port, to kill and restart under load.

Faults are injected into this one, never into the machine's service.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import children
from tests.faults.hosts import Host
from tests.processes import free_port
from tests.support import service_missing

START_DEADLINE = 90.0


class OwnMariaDB:
    """One mariadbd with its own data directory, restartable on the same port."""

    def __init__(
        self, directory: Path, options: tuple[str, ...] = (), *, host: Host | None = None
    ) -> None:
        """``options``: more mariadbd options (binary logging, a server id...); ``host``:
        the test host it runs on (``tests/faults/hosts.py``), reached at its address by
        ``root`` from anywhere, instead of on this machine's loopback."""
        for tool in ("mariadbd", "mariadb-install-db", "mariadb-admin"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                service_missing(tool, FileNotFoundError(tool))
        self._base = directory
        self._data = directory / "data"
        self.host = host
        self.address = host.address if host else "127.0.0.1"
        self.port = 3306 if host else free_port()
        self._options = options
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run(  # noqa: S603
            [  # noqa: S607
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self._data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ],
            capture_output=True,
            check=True,
            preexec_fn=children.with_parent(),
        )

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"mysql+asyncmy://root@{self.address}:{self.port}/{database}"

    def _command(self, *args: str) -> list[str]:
        return self.host.command(*args) if self.host else list(args)

    def _answers(self) -> bool:
        result = subprocess.run(  # noqa: S603
            self._command(
                "mariadb-admin",
                "--protocol=tcp",
                "-h127.0.0.1",
                f"-P{self.port}",
                "-uroot",
                "--connect-timeout=2",
                "ping",
            ),
            capture_output=True,
            check=False,
            preexec_fn=children.with_parent(),
        )
        return result.returncode == 0

    def start(self) -> None:
        """Start and wait until it answers."""
        self.launch()
        self.wait_answering()
        if self.host:
            self.sql(
                "CREATE USER IF NOT EXISTS 'root'@'%';"
                "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
            )

    def launch(self) -> None:
        """Start, from the thread that outlives it (it dies with that thread)."""
        self.process = subprocess.Popen(  # noqa: S603
            self._command(
                shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--no-defaults",
                "--user=root",
                f"--datadir={self._data}",
                f"--port={self.port}",
                f"--bind-address={','.join(dict.fromkeys(('127.0.0.1', self.address)))}",
                f"--socket={self._base / 'sock'}",
                f"--pid-file={self._base / 'pid'}",
                f"--log-error={self._base / 'error.log'}",
                "--innodb-buffer-pool-size=32M",
                *self._options,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=children.with_parent(),
        )

    def wait_answering(self) -> None:
        """Wait until the started server answers (fail with its log if it never does)."""
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self._base / "error.log").read_text()[-2000:]
                pytest.fail(f"mariadbd did not start: {log}")
            time.sleep(0.2)  # a starting server: there is no event to wait on

    def kill(self) -> None:
        """SIGKILL: connections drop, InnoDB recovers at the next start."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def create_database(self, name: str) -> None:
        """An empty utf8mb4 database."""
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    def sql(self, statements: str, database: str | None = None) -> str:
        """Run ``statements`` as root with the ``mariadb`` client (in ``database``); what
        it printed."""
        return subprocess.run(  # noqa: S603
            self._command(
                "mariadb",
                "--protocol=tcp",
                "-h127.0.0.1",
                f"-P{self.port}",
                "-uroot",
                "--batch",
                "--skip-column-names",
                *([f"--database={database}"] if database else []),
                "-e",
                statements,
            ),
            check=True,
            capture_output=True,
            text=True,
            preexec_fn=children.with_parent(),
        ).stdout

    def stop(self) -> None:
        """Gone for good."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def own_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnMariaDB]:
    """A private mariadbd for one test module, stopped afterwards."""
    server = OwnMariaDB(tmp_path_factory.mktemp("own-mariadb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
