"""Issue 17 point 4: ``deploy/release/release.py`` run for real, against a real nginx in
front of real ``cmschat serve`` processes (its ``command`` runner starting and stopping
them as systemd or Docker would).

Each colour serves its own web directory whose ``colour.txt`` says ``SLOT:IMAGE``, so a
request through nginx tells which colour, and which release of it, answered. While a
release runs, a poller requests through nginx without pause: a release that drops a
request fails the test.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench import children
from tests.commands import run, stop
from tests.deploy import colours
from tests.deploy.nginx_site import listening
from tests.faults.load import CLOSED_UNANSWERED
from tests.processes import clean_env, cmschat, free_port
from tests.support import required_file_missing

pytestmark = pytest.mark.slow

NGINX = Path("/usr/sbin/nginx")
DEADLINE = 60.0


@dataclass
class Stage:
    """nginx on a spare port, two slots' ports, and the release tool's settings."""

    directory: Path
    nginx_port: int
    ports: dict[str, int]
    env: dict[str, str]
    upstream: Path

    def release(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return colours.release(self.env, *args, **settings)

    def answering(self) -> str:
        """``SLOT:IMAGE`` of the colour nginx sent this request to."""
        answer = httpx.get(f"http://127.0.0.1:{self.nginx_port}/colour.txt", timeout=5)
        answer.raise_for_status()
        return answer.text.strip()

    def running(self, slot: str) -> bool:
        return colours.running(self.directory, slot)

    def web_client(self) -> str:
        """The release whose web client WEB_DIR shows."""
        return (self.directory / "site" / "web" / "index.html").read_text().strip()

    def log(self, slot: str) -> str:
        return (self.directory / f"{slot}.log").read_text()


@dataclass
class Poller:
    """Requests through nginx, one after the other, until stopped."""

    stage: Stage
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    resent: int = 0
    """Requests sent again at once: a kept-alive connection closed before any answer."""

    def run(self) -> None:
        url = f"http://127.0.0.1:{self.stage.nginx_port}/colour.txt"
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    try:
                        answer = client.get(url)
                    except CLOSED_UNANSWERED:
                        # nginx's old workers close their idle kept-alive connections at a
                        # reload: sent again once; failing again is a failure.
                        self.resent += 1
                        answer = client.get(url)
                except httpx.TransportError as error:
                    self.failures.append(repr(error))
                    continue
                if answer.status_code == 200:
                    self.answers[answer.text.strip()] += 1
                else:
                    self.failures.append(f"{answer.status_code}: {answer.text[:100]}")


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    if not NGINX.exists():
        required_file_missing(NGINX, "nginx runs in front of the releases")
    data = tmp_path / "data"
    server_env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATA_DIR=str(data),
        CMSCHAT_DATABASE_URL=f"sqlite+aiosqlite:///{data / 'cmschat.db'}",
    )
    migrated = cmschat(tmp_path, "migrate", env=server_env)
    assert migrated.returncode == 0, migrated.stderr
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("upstream cmschat_app {\n    server 127.0.0.1:9 down;\n}\n")
    nginx_port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/nginx-error.log;\n"
        "events {}\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n"
        f"    include {upstream};\n"
        "    server {\n"
        f"        listen 127.0.0.1:{nginx_port};\n"
        "        location / { proxy_pass http://cmschat_app; }\n"
        "    }\n"
        "}\n"
    )
    nginx = [str(NGINX), "-p", str(tmp_path), "-c", str(conf)]
    front = subprocess.Popen(  # noqa: S603 - the system nginx on our own file
        nginx, stdin=subprocess.DEVNULL, preexec_fn=children.with_parent()
    )
    wait_for(lambda: front.poll() is not None or listening(nginx_port), within=15)
    assert front.poll() is None, (tmp_path / "nginx-error.log").read_text()
    ports = {slot: free_port() for slot in colours.SLOTS}
    env = dict(server_env)
    env.update(
        RELEASE_SLOTS=" ".join(f"{slot}=127.0.0.1:{port}" for slot, port in ports.items()),
        RELEASE_UPSTREAM_FILE=str(upstream),
        RELEASE_NGINX_TEST=" ".join([*nginx, "-t", "-q"]),
        RELEASE_NGINX_RELOAD=" ".join([*nginx, "-s", "reload"]),
        RELEASE_NGINX_PID_FILE=str(tmp_path / "nginx.pid"),
        **colours.runner_settings(tmp_path),
        RELEASE_READY_TIMEOUT=str(DEADLINE),
        RELEASE_CHECK_URL=f"http://127.0.0.1:{nginx_port}/readyz",
        RELEASE_CHECKS="2",
        # The client nginx would serve: an "index.html" that names the release.
        RELEASE_WEB_DIR=str(tmp_path / "site" / "web"),
        RELEASE_WEB_CMD="printf '%s\\n' {image} > {dir}/index.html",
    )
    stage = Stage(tmp_path, nginx_port, ports, env, upstream)
    try:
        yield stage
    finally:
        stop(front, within=15)
        colours.kill_left(tmp_path)


def wait_for(condition: Callable[[], bool], within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def released(stage: Stage, *args: str, status: int = 0, **settings: str) -> str:
    result = stage.release(*args, **settings)
    assert result.returncode == status, result.stdout + result.stderr
    return result.stdout


def polled(
    stage: Stage, *args: str, status: int = 0, **settings: str
) -> tuple[subprocess.CompletedProcess[str], Poller]:
    """A release run while a poller requests through nginx without pause."""
    poller = Poller(stage)
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        result = stage.release(*args, **settings)
    finally:
        poller.stop.set()
        thread.join(timeout=30)
    assert result.returncode == status, result.stdout + result.stderr
    return result, poller


def test_blue_green_switches_nginx_drains_the_old_colour_and_rolls_back(stage: Stage) -> None:
    first = released(stage, "blue-green", "v1")
    assert "released v1 on blue" in first
    assert stage.answering() == "blue:v1"
    assert stage.web_client() == "v1"

    switched, poller = polled(stage, "blue-green", "v2")
    output = switched.stdout
    assert "released v2 on green" in output
    assert stage.answering() == "green:v2"
    assert stage.web_client() == "v2"
    # Switched in one step (a symlink renamed over it); only the copies a rollback needs kept.
    web = stage.directory / "site" / "web"
    assert web.is_symlink()
    assert len(list(web.parent.glob("web.*"))) == 2
    assert not poller.failures, poller.failures[:5]
    assert poller.answers["blue:v1"] > 0 and poller.answers["green:v2"] > 0, poller.answers
    # The old colour was drained (SIGTERM), not killed, and only after the switch.
    assert not stage.running("blue")
    assert "draining" in output and output.index("nginx: live green") < output.index(
        "blue: draining"
    )
    assert "Shutting down" in stage.log("blue") or "shutdown" in stage.log("blue").lower()

    status = stage.release("status")
    assert status.returncode == 0
    lines = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert "live" in lines["green"] and "v2" in lines["green"] and "ready" in lines["green"]
    assert "idle" in lines["blue"]

    back, poller = polled(stage, "rollback")
    assert "rolling back to v1" in back.stdout
    assert stage.answering() == "blue:v1"
    assert stage.web_client() == "v1"
    assert not poller.failures, poller.failures[:5]
    assert not stage.running("green")


def test_a_failed_release_leaves_the_old_colour_serving(stage: Stage) -> None:
    released(stage, "blue-green", "v1")
    before = stage.upstream.read_bytes()

    # A new colour that never becomes ready: nginx never switched, nothing changed.
    never = stage.release("blue-green", "broken", READY_TIMEOUT="10")
    assert never.returncode == 1, never.stdout + never.stderr
    assert never.stderr == "release failed: green was not ready within 10 s\n"
    assert "nginx: live" not in never.stdout
    assert stage.upstream.read_bytes() == before
    assert stage.answering() == "blue:v1"
    assert stage.running("blue") and not stage.running("green")
    assert "CMSCHAT_LOG_LEVEL" in stage.log("green")

    # nginx refusing to reload: the upstream file put back (so that a later reload, a
    # certificate renewal's, switches nothing), the web client too, the new colour stopped.
    refused = stage.release("blue-green", "v2", NGINX_RELOAD="echo reload refused; false")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr == "release failed: nginx reload failed: reload refused\n"
    assert stage.upstream.read_bytes() == before
    assert stage.web_client() == "v1"
    assert stage.answering() == "blue:v1"
    assert stage.running("blue") and not stage.running("green")

    # A new colour that fails its check once live: nginx pointed back, the new one stopped,
    # and no request through nginx failed meanwhile.
    failed, poller = polled(stage, "blue-green", "v2", status=2, CHECK_CMD="[ {image} != v2 ]")
    assert "release rolled back: the check failed after the switch" in failed.stderr
    assert "web client" in failed.stdout and stage.web_client() == "v1"
    assert failed.stdout.index("nginx: live green") < failed.stdout.index("nginx: live blue")
    assert stage.upstream.read_bytes() == before
    assert stage.answering() == "blue:v1"
    assert stage.running("blue") and not stage.running("green")
    assert not poller.failures, poller.failures[:5]
    assert poller.answers["green:v2"] > 0, poller.answers  # it did serve, then no more


def test_rolling_replaces_each_slot_while_the_others_serve(stage: Stage) -> None:
    released(stage, "blue-green", "v1")
    # The rolling layout: both slots live on v1.
    both = released(stage, "up", "v1")
    assert "green: starting v1" in both and "blue: starting" not in both
    wait_for(lambda: {stage.answering(), stage.answering()} == {"blue:v1", "green:v1"})
    assert stage.release("up", "v1").stderr == "release failed: every slot is live already\n"

    rolled, poller = polled(stage, "rolling", "v2")
    output = rolled.stdout

    assert "released v2 on blue green" in output
    assert output.index("out: blue") < output.index("blue: draining")
    assert not poller.failures, poller.failures[:5]
    assert {stage.answering(), stage.answering()} == {"blue:v2", "green:v2"}
    assert stage.web_client() == "v2"
    # While one slot was out, the other alone answered: never a mix of failures.
    assert poller.answers["green:v1"] > 0 and poller.answers["blue:v2"] > 0, poller.answers


def test_bad_settings_get_one_line_and_status_3(stage: Stage) -> None:
    bad = stage.release("blue-green", "v1", RUNNER="kubernetes")
    assert bad.returncode == 3
    assert (
        bad.stderr.strip() == "release failed: RUNNER: 'kubernetes' is neither docker nor command"
    )
    slots = stage.release("status", SLOTS="blue=nowhere")
    assert slots.returncode == 3
    assert "is not name=host:port" in slots.stderr
    assert "Traceback" not in bad.stderr + slots.stderr
    # The shipped example of /etc/cmschat/release.env reads as settings.
    example = colours.RELEASE.with_name("release.env.example")
    plain = {key: value for key, value in stage.env.items() if not key.startswith("RELEASE_")}
    shown = colours.release(plain, "--config", str(example), "status")
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[:2] for line in shown.stdout.splitlines()] == [
        ["blue", "127.0.0.1:8001"],
        ["green", "127.0.0.1:8002"],
    ]


def test_release_sh_runs_the_tool() -> None:
    shown = run([str(colours.RELEASE.with_name("release.sh")), "--help"])
    assert shown.returncode == 0 and "blue-green" in shown.stdout
