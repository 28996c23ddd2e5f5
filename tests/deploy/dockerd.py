"""A Docker engine of the test's own: Debian's ``dockerd`` with its own data root, exec root,
socket and bridge, stopped and cleaned up afterwards; and a base image made from Debian's
packages (no image registry is reachable from the test machines).

The engine touches no firewall: ``--iptables=false`` (published ports are forwarded by
``docker-proxy``, which reaches the container through the bridge) and its own bridge, made
here and removed afterwards, so it neither needs nor disturbs ``docker0`` or another
engine running on the same machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import children
from tests.commands import run, stop

DOCKERD = "/usr/sbin/dockerd"
MMDEBSTRAP = "/usr/bin/mmdebstrap"
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "mariadb-client")
"""What the local base holds: the public python:3.11-slim-bookworm's part the image uses."""


@dataclass
class Engine:
    """A running engine: ``env`` points the ``docker`` client at it."""

    client: str
    env: dict[str, str]
    root: Path

    def docker(
        self, *args: str, timeout: float = 120, stdin: str = "", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine; fail with its output unless it succeeds."""
        result = run([self.client, *args], timeout=timeout, env=self.env, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


def docker_client() -> str | None:
    """Debian's client beside Debian's engine, else whichever ``docker`` is on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.231-254.x.0 that no interface or route of this machine uses."""
    routes = run(["ip", "-4", "route", "show", "table", "all"])
    assert routes.returncode == 0, routes.stderr
    used = routes.stdout
    taken = {ipaddress.ip_network(word, strict=False) for word in used.split() if "/" in word}
    for second in range(231, 255):
        for third in range(0, 256, 17):
            candidate = ipaddress.ip_network(f"10.{second}.{third}.0/24")
            if not any(candidate.overlaps(network) for network in taken):
                return candidate
    raise RuntimeError("no free 10.x /24 for the test engine's bridge")


def _ip(*args: str) -> None:
    made = run(["ip", *args])
    assert made.returncode == 0, made.stderr


def _unmount_under(root: Path) -> None:
    """Unmount whatever the engine left mounted below ``root`` (netns, overlays), deepest
    first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        run(["umount", "--lazy", point])


@contextlib.contextmanager
def running_engine() -> Iterator[Engine]:
    """Start ``dockerd`` in a directory of its own; stop it, undo what it set up and remove
    the directory on the way out."""
    client = docker_client()
    if client is None:
        raise FileNotFoundError("docker (the client)")
    bridge = f"cmst{os.getpid() % 100000}"
    subnet = _free_subnet()
    gateway = next(subnet.hosts())
    _ip("link", "add", "name", bridge, "type", "bridge")
    # Not pytest's temporary directory, which other sessions of pytest on the machine may
    # clean up while the engine runs; a short path, as the engine's sockets live under it.
    root = Path(tempfile.mkdtemp(prefix="cmschat-dockerd-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        socket_path = root / "docker.sock"
        with (root / "dockerd.log").open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - Debian's engine, our own arguments
                [
                    DOCKERD,
                    f"--data-root={root / 'data'}",
                    f"--exec-root={root / 'exec'}",
                    f"--pidfile={root / 'dockerd.pid'}",
                    f"--host=unix://{socket_path}",
                    f"--bridge={bridge}",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-masq=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=children.with_parent(),
            )
        env = {**os.environ, "DOCKER_HOST": f"unix://{socket_path}", "DOCKER_BUILDKIT": "0"}
        env.pop("DOCKER_CONTEXT", None)
        engine = Engine(client, env, root)
        _wait_until_up(engine, process)
        yield engine
    finally:
        if process is not None:
            stop(process, within=STOP_DEADLINE)
        _unmount_under(root)
        run(["ip", "link", "delete", bridge])
        # Images and layers take hundreds of MiB.
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_up(engine: Engine, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (engine.root / "dockerd.log").read_text(errors="replace")
            raise RuntimeError(f"dockerd exited with {process.returncode}:\n{log[-4000:]}")
        if engine.docker("version", timeout=10, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer within {START_DEADLINE} s")


def cache_dir() -> Path:
    """Where the test suite keeps what is slow to make and safe to reuse."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cmschat-tests"


def debian_rootfs() -> Path:
    """A minimal Debian with Python 3.11 as a tarball, made once by mmdebstrap and cached
    (keyed by suite and packages)."""
    key = hashlib.sha256(" ".join((DEBIAN_SUITE, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    tarball = cache_dir() / f"debian-{DEBIAN_SUITE}-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".{os.getpid()}.partial")
    result = run(
        [
            MMDEBSTRAP,
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            "--format=tar",
            DEBIAN_SUITE,
            partial,
        ],
        timeout=900,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed:\n{result.stdout}\n{result.stderr}")
    partial.rename(tarball)
    return tarball


def import_base(engine: Engine, tarball: Path, name: str) -> str:
    """The rootfs as an image named ``name`` in the engine."""
    engine.docker("import", "--change", 'CMD ["python3"]', str(tarball), name, timeout=300)
    return name
