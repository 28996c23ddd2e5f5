"""The scripts every pipeline runs (deploy/pipelines/), against stand-ins: a local HTTP
server for the deployed site, and an `ssh` that runs the remote command here, on a fake
host folder, with a fake release.sh and docker that log what they were asked to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.commands import run
from tests.deploy.pipeline_files import ROOT, SCRIPTS
from tests.support import required_file_missing

CLIENT_PAGE = b"<!doctype html><html><head><title>cmschat</title></head></html>"
REGISTRY_PASSWORD = "registry-password-for-the-test"

FAKE_SSH = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$FAKE_LOG"
exec bash -c "${@: -1}"
"""
FAKE_DOCKER = """#!/usr/bin/env bash
printf 'docker %s stdin=%s\\n' "$*" "$(cat)" >> "$FAKE_LOG"
"""
# Exits with the status listed for its image in $FAKE_RELEASE_STATUS (default 0).
FAKE_RELEASE = """#!/usr/bin/env bash
echo "release.sh $1 $2 in $PWD" >> "$FAKE_LOG"
status="$(sed -n "s|^$2 ||p" "$FAKE_RELEASE_STATUS" 2>/dev/null || true)"
exit "${status:-0}"
"""


@contextmanager
def site(pages: dict[str, tuple[int, bytes]]) -> Iterator[str]:
    """A local HTTP server answering each path with (status, body); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = pages.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def healthy(**changes: tuple[int, bytes]) -> dict[str, tuple[int, bytes]]:
    """A deployed cmschat's answers, with some changed."""
    pages = {"/healthz": (200, b'{"status":"ok"}'), "/readyz": (200, b'{"status":"ready"}')}
    pages["/"] = (200, CLIENT_PAGE)
    return {**pages, **{"/" + k.replace("root", "").strip("_"): v for k, v in changes.items()}}


def smoke(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMOKE_ATTEMPTS": "2", "SMOKE_DELAY": "0"}
    return run([str(SCRIPTS / "smoke.sh"), url + "/"], timeout=60, env=env)


def test_smoke_passes_on_a_healthy_site() -> None:
    with site(healthy()) as url:
        result = smoke(url)
    assert result.returncode == 0, result.stderr
    assert f"{url} passed" in result.stdout


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"readyz": (503, b'{"status":"not ready"}')}, "/readyz"),
        ({"healthz": (500, b"")}, "/healthz"),
        ({"root": (200, b"<html>nginx default page</html>")}, "/"),
    ],
    ids=["not-ready", "down", "not-the-client"],
)
def test_smoke_fails_naming_the_failed_check(
    changes: dict[str, tuple[int, bytes]], failed: str
) -> None:
    with site(healthy(**changes)) as url:
        result = smoke(url)
    assert result.returncode != 0
    assert f"FAILED {url}{failed}" in result.stderr


@dataclass
class Host:
    """A checkout with the release scripts, and the folder standing in for the host."""

    checkout: Path
    folder: Path
    log: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            [str(self.checkout / "deploy" / "pipelines" / "release-remote.sh"), *args],
            timeout=60,
            env=self.env,
        )

    def fail_release_of(self, image: str, status: int) -> None:
        with (self.log.parent / "release-status").open("a") as file:
            file.write(f"{image} {status}\n")

    def releases(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("release")]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    checkout = tmp_path / "checkout"
    shutil.copytree(SCRIPTS, checkout / "deploy" / "pipelines")
    (checkout / "deploy" / "release").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for path, text in [
        (checkout / "deploy" / "release" / "release.sh", FAKE_RELEASE),
        (bin_dir / "ssh", FAKE_SSH),
        (bin_dir / "docker", FAKE_DOCKER),
    ]:
        path.write_text(text)
        path.chmod(0o755)
    key, known_hosts = tmp_path / "key", tmp_path / "known_hosts"
    key.write_text("not a real key\n")
    key.chmod(0o600)
    known_hosts.write_text("dev.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAtest\n")
    log = tmp_path / "log"
    log.touch()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_RELEASE_STATUS": str(tmp_path / "release-status"),
        "DEPLOY_HOST": "dev.example.org",
        "DEPLOY_USER": "deploy",
        "DEPLOY_SSH_KEY_FILE": str(key),
        "DEPLOY_KNOWN_HOSTS_FILE": str(known_hosts),
        "DEPLOY_DIR": str(tmp_path / "host"),
        "REGISTRY": "ghcr.io",
        "REGISTRY_USER": "ci",
        "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
    }
    return Host(checkout, tmp_path / "host", log, env)


def test_deploy_copies_pulls_and_runs_the_release_script_over_checked_ssh(host: Host) -> None:
    result = host.run("deploy", "blue-green", "ghcr.io/acme/cmschat:abc123")
    assert result.returncode == 0, result.stderr
    release_dir = host.folder / "releases" / "abc123"
    assert (release_dir / "deploy" / "release" / "release.sh").exists()
    assert host.releases() == [
        f"release.sh blue-green ghcr.io/acme/cmschat:abc123 in {release_dir}"
    ]
    log = host.log.read_text()
    ssh_calls = [line for line in log.splitlines() if line.startswith("-i ")]
    assert ssh_calls
    for call in ssh_calls:
        assert "-o StrictHostKeyChecking=yes" in call
        assert f"-o UserKnownHostsFile={host.env['DEPLOY_KNOWN_HOSTS_FILE']}" in call
        assert "deploy@dev.example.org" in call
    # The pull credential goes over stdin, never on a command line, and is logged out.
    assert f"docker login ghcr.io -u ci --password-stdin stdin={REGISTRY_PASSWORD}" in log
    assert not any(REGISTRY_PASSWORD in call for call in ssh_calls)
    assert log.index("docker pull --quiet ghcr.io/acme/cmschat:abc123") < log.index(
        "docker logout ghcr.io"
    )


def test_a_rolled_back_release_fails_the_deploy(host: Host) -> None:
    host.fail_release_of("ghcr.io/acme/cmschat:bad", 3)
    result = host.run("deploy", "rolling", "ghcr.io/acme/cmschat:bad")
    assert result.returncode == 3


def test_refuses_to_run_without_known_hosts(host: Host) -> None:
    Path(host.env["DEPLOY_KNOWN_HOSTS_FILE"]).write_text("")
    result = host.run("deploy", "blue-green", "ghcr.io/acme/cmschat:abc123")
    assert result.returncode != 0
    assert "known_hosts is missing or empty" in result.stderr
    assert host.log.read_text() == ""


def test_ship_records_a_release_that_passes_its_smoke_test(host: Host) -> None:
    with site(healthy()) as url:
        first = host.run("ship", "blue-green", "ghcr.io/acme/cmschat:one", url)
    assert first.returncode == 0, first.stderr
    current = host.run("current")
    assert current.stdout.strip() == "ghcr.io/acme/cmschat:one"


def test_ship_rolls_back_to_the_last_good_release_when_the_smoke_test_fails(host: Host) -> None:
    with site(healthy()) as url:
        assert host.run("ship", "blue-green", "ghcr.io/acme/cmschat:one", url).returncode == 0
    # The switch succeeds, but the public URL is not ready; then the old release is back.
    with site(healthy(readyz=(503, b"{}"))) as url:
        host.env["SMOKE_ATTEMPTS"], host.env["SMOKE_DELAY"] = "1", "0"
        result = host.run("ship", "blue-green", "ghcr.io/acme/cmschat:two", url)
    assert result.returncode != 0
    assert "rolling back to ghcr.io/acme/cmschat:one" in result.stderr
    releases = [line.split(" in ")[0] for line in host.releases()]
    assert releases == [
        "release.sh blue-green ghcr.io/acme/cmschat:one",
        "release.sh blue-green ghcr.io/acme/cmschat:two",
        "release.sh blue-green ghcr.io/acme/cmschat:one",
    ]
    # The rollback runs from the old release's own copy of deploy/.
    assert host.releases()[-1].endswith(str(host.folder / "releases" / "one"))
    assert host.run("current").stdout.strip() == "ghcr.io/acme/cmschat:one"


def test_ship_stops_when_release_sh_rolled_back_by_itself(host: Host) -> None:
    host.fail_release_of("ghcr.io/acme/cmschat:two", 1)
    with site(healthy()) as url:
        assert host.run("ship", "blue-green", "ghcr.io/acme/cmschat:one", url).returncode == 0
        result = host.run("ship", "blue-green", "ghcr.io/acme/cmschat:two", url)
    assert result.returncode == 1
    # No second rollback on top of release.sh's own, and the good release stays recorded.
    assert len(host.releases()) == 2
    assert host.run("current").stdout.strip() == "ghcr.io/acme/cmschat:one"


def test_the_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        required_file_missing(Path("shellcheck"), "shellcheck checks the deploy scripts")
    scripts = sorted(str(path) for path in (ROOT / "deploy").rglob("*.sh"))
    scripts += sorted(str(path) for path in (ROOT / "scripts").iterdir())
    assert len(scripts) >= 10
    result = run([shellcheck, *scripts], timeout=60)
    assert result.returncode == 0, result.stdout
