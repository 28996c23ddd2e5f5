"""A redis-server of the suite's own on a spare port, to kill, restart, freeze and thaw.

Faults are injected into this one, never into the machine's service that other tests and
other people use.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import children
from tests.faults.hosts import Host
from tests.processes import free_port
from tests.support import service_missing

START_DEADLINE = 30.0


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class OwnRedis:
    """One redis-server process (no persistence), restartable on the same port."""

    def __init__(self, directory: Path, *, host: Host | None = None) -> None:
        """``host``: the test host it runs on (``tests/faults/hosts.py``), listening on its
        address, instead of on this machine's loopback."""
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server", FileNotFoundError("redis-server"))
        self._binary = binary or "redis-server"
        self._directory = directory
        self.host = host
        self.address = host.address if host else "127.0.0.1"
        self.port = 6379 if host else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of this server."""
        return f"redis://{self.address}:{self.port}/0"

    def _answers(self) -> bool:
        if self.host:
            return self.host.call(_answers, self.address, self.port)
        return _answers(self.address, self.port)

    def start(self) -> None:
        """Start and wait until it answers PING."""
        self.process = subprocess.Popen(  # noqa: S603 - the Debian binary, fixed options
            [
                *(self.host.command() if self.host else ()),
                self._binary,
                *("--port", str(self.port)),
                *("--bind", self.address),
                # No password on a network of the test's own: answer its other hosts.
                *("--protected-mode", "no"),
                *("--save", ""),
                *("--appendonly", "no"),
                *("--dir", str(self._directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=children.with_parent(),
        )
        deadline = time.monotonic() + START_DEADLINE
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on {self.port}")
            time.sleep(0.05)  # a starting server: there is no event to wait on

    def kill(self) -> None:
        """SIGKILL: the connections drop at once, whatever Redis was doing."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after a freeze."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Gone for good (thawed first, so SIGKILL is not left pending on a stopped one)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A private redis-server, stopped afterwards whatever state the test left it in."""
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
