"""Running ``cmschat`` as real processes: commands to completion, servers until stopped."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench import children

COMMAND_TIMEOUT = 60.0
READY_DEADLINE = 60.0  # a loaded CI machine can take long to import and migrate
STOP_DEADLINE = 15.0


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any CMSCHAT_* variable, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CMSCHAT_")}
    env.update(settings)
    return env


def cmschat(
    cwd: Path, *args: str, env: dict[str, str], stdin: str = "", prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cmschat ARGS`` to completion in ``cwd`` (under ``prefix``: ``ip
    netns exec HOST`` runs it on a test host)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [*prefix, sys.executable, "-m", "cmschat", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        preexec_fn=children.with_parent(),
    )


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def random_password() -> str:
    """A strong password nobody has used."""
    return "Fresh-" + secrets.token_urlsafe(12)


@dataclass
class Server:
    """A running ``cmschat serve`` with its output going to files."""

    process: subprocess.Popen[bytes]
    base_url: str
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        """Everything printed to stdout so far."""
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        """Everything logged to stderr so far."""
        return self.stderr_path.read_text()

    def wait_ready(self, within: float = READY_DEADLINE) -> None:
        """Poll /readyz until it answers 200; fail with the logs if it never does."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"serve was not ready within {within} s:\n{self.stderr()}")

    def stop(self) -> int:
        """SIGTERM, as an orchestrator sends; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop within {STOP_DEADLINE} s of SIGTERM")


def launch_server(
    directory: Path,
    env: dict[str, str],
    name: str,
    port: int | None = None,
    workers: int = 1,
    *,
    address: str = "127.0.0.1",
    prefix: tuple[str, ...] = (),
) -> Server:
    """``cmschat serve`` started in ``directory``, not yet ready. Call it from the thread
    that outlives the server (the child dies with that thread, ``bench/children.py``); wait
    for it anywhere, a worker thread included. ``address`` and ``prefix``: where it listens
    and what it runs under (a test host's, ``tests/faults/hosts.py``)."""
    port = port or free_port()
    command = ("serve", "--host", address, "--port", str(port), "--workers", str(workers))
    return launch(
        directory, env, name, *command, base_url=f"http://{address}:{port}", prefix=prefix
    )


def launch(
    directory: Path,
    env: dict[str, str],
    name: str,
    *args: str,
    base_url: str = "",
    prefix: tuple[str, ...] = (),
) -> Server:
    """``python -m cmschat ARGS`` started in ``directory``, its output going to files;
    ``prefix``: the command it runs under (``ip netns exec HOST``)."""
    stdout_path = directory / f"{name}.stdout"
    stderr_path = directory / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*prefix, sys.executable, "-m", "cmschat", *args],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=children.with_parent(),
        )
    return Server(process, base_url, stdout_path, stderr_path)


def ready_deadline(workers: int) -> float:
    """Each worker imports and starts the app on its own: on a loaded machine N of them take
    up to N times as long as one to be ready, so the deadline grows with them."""
    return READY_DEADLINE * workers


@contextmanager
def running_server(
    directory: Path,
    env: dict[str, str],
    name: str,
    port: int | None = None,
    workers: int = 1,
    *,
    wait: bool = True,
    address: str = "127.0.0.1",
    prefix: tuple[str, ...] = (),
) -> Iterator[Server]:
    """``cmschat serve`` on a free port in ``directory``, ready unless ``wait`` is false
    (the caller waits, ``ready_deadline``); always killed afterwards. ``address``,
    ``prefix``: as ``launch_server``'s."""
    server = launch_server(directory, env, name, port, workers, address=address, prefix=prefix)
    try:
        if wait:
            server.wait_ready(ready_deadline(workers))
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=STOP_DEADLINE)
