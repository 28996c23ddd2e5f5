"""deploy/compose/switch-colour.sh: nginx sent to the other colour by rewriting its one mounted
upstream file in place and reloading it, never by recreating it; refused unless the colour is
healthy, and undone when nginx refuses the file or the reload.

The script runs for real in a copy of deploy/compose, with a fake `docker` first on PATH that
logs what it was asked and answers from environment variables.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.commands import run
from tests.deploy.compose import ACTIVE_UPSTREAM, COMPOSE_DIR, REPO
from tests.deploy.test_image import IMAGE_WEB_DIR

NGINX = COMPOSE_DIR / "nginx"
BLUE = (NGINX / "upstream.blue.conf").read_text()
GREEN = (NGINX / "upstream.green.conf").read_text()

# `compose ps -q S` -> an id (none when FAKE_RUNNING=no); `inspect` -> $FAKE_HEALTH;
# `compose exec -T nginx nginx -t` / `-s reload` -> exit $FAKE_NGINX_TEST / $FAKE_NGINX_RELOAD;
# `compose cp SERVICE:PATH DEST` -> DEST/index.html naming SERVICE:PATH (fails if $FAKE_CP).
# `nginx -t` also logs which colour active.conf names at that moment, and every call the
# directory it ran in.
FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG"
printf '%s\\n' "$PWD" >> "$FAKE_DIRS"
case "$*" in
    "compose ps -q "*)
        if [ "${FAKE_RUNNING:-yes}" = yes ]; then echo "id-$4"; fi ;;
    "inspect --format {{.State.Health.Status}} "*)
        echo "$FAKE_HEALTH" ;;
    "compose exec -T nginx nginx -t")
        printf 'tested %s\\n' "$(grep -o 'cmschat-[a-z]*:8000' nginx/active.conf)" >> "$FAKE_LOG"
        if [ "$FAKE_NGINX_TEST" != 0 ]; then
            echo "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok" >&2
            echo "nginx: [emerg] host not found in upstream" >&2
        fi
        exit "$FAKE_NGINX_TEST" ;;
    "compose exec -T nginx nginx -s reload")
        if [ "$FAKE_NGINX_RELOAD" != 0 ]; then echo "service nginx is not running" >&2; fi
        exit "$FAKE_NGINX_RELOAD" ;;
    "compose cp "*)
        if [ "${FAKE_CP:-0}" != 0 ]; then
            mkdir -p "$4" && echo partial > "$4/half"
            echo "Error response from daemon: Could not find the file" >&2
            exit 1
        fi
        mkdir -p "$4" && printf '%s\n' "$3" > "$4/index.html" ;;
    *)
        echo "fake docker: unexpected: $*" >&2
        exit 99 ;;
esac
"""

PS_GREEN = "compose ps -q cmschat-green"
INSPECT_GREEN = "inspect --format {{.State.Health.Status}} id-cmschat-green"
NGINX_TEST = "compose exec -T nginx nginx -t"
NGINX_RELOAD = "compose exec -T nginx nginx -s reload"
WEB_IN_IMAGE = IMAGE_WEB_DIR + "/."  # where the image test finds the client
COPY_GREEN = f"compose cp cmschat-green:{WEB_IN_IMAGE} web-root/web.green."


@dataclass
class Host:
    """A copy of deploy/compose on blue, and a fake docker."""

    compose: Path
    bin: Path
    log: Path
    dirs: Path

    @property
    def active(self) -> Path:
        return self.compose / "nginx" / "active.conf"

    @property
    def web(self) -> Path:
        """The link nginx serves the web client through."""
        return self.compose / "web-root" / "web"

    def served(self) -> str:
        """What the web client nginx would serve says it is."""
        return (self.web / "index.html").read_text().strip()

    def copies(self) -> set[str]:
        return {p.name for p in self.web.parent.iterdir() if p.name != "web"}

    def switch(
        self,
        *args: str,
        health: str = "healthy",
        running: bool = True,
        nginx_test: int = 0,
        reload: int = 0,
        copy: int = 0,
    ) -> subprocess.CompletedProcess[str]:
        env = os.environ | {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_LOG": str(self.log),
            "FAKE_DIRS": str(self.dirs),
            "FAKE_HEALTH": health,
            "FAKE_RUNNING": "yes" if running else "no",
            "FAKE_NGINX_TEST": str(nginx_test),
            "FAKE_NGINX_RELOAD": str(reload),
            "FAKE_CP": str(copy),
        }
        # From another directory: the script finds its files (and compose.yaml) itself.
        return run([self.compose / "switch-colour.sh", *args], timeout=30, env=env, cwd=self.bin)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> Host:
    compose = tmp_path / "compose"
    ignore = shutil.ignore_patterns(
        ".env", "secrets", "active.conf", "active.conf.previous", ".switch.lock", "web-root"
    )
    shutil.copytree(COMPOSE_DIR, compose, ignore=ignore)
    # As make-secrets.sh leaves them: nginx on blue, the checkout's web client.
    (compose / "nginx" / "active.conf").write_text(BLUE)
    (compose / "web-root" / "web.checkout").mkdir(parents=True)
    (compose / "web-root" / "web.checkout" / "index.html").write_text("checkout\n")
    (compose / "web-root" / "web").symlink_to("web.checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return Host(compose, bin_dir, tmp_path / "docker.log", tmp_path / "docker.dirs")


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_healthy_colour_is_switched_to_in_the_same_file_tested_then_reloaded(
    host: Host,
) -> None:
    inode = host.active.stat().st_ino
    result = host.switch("green")
    assert result.returncode == 0, result.stderr
    assert "green is active" in one_line(result.stdout)
    assert result.stderr == ""
    assert host.active.read_text() == GREEN
    # The same inode: the container's single-file bind mount sees only writes in place.
    assert host.active.stat().st_ino == inode
    assert (host.compose / "nginx" / "active.conf.previous").read_text() == BLUE
    calls = host.calls()
    assert calls[:2] == [PS_GREEN, INSPECT_GREEN]
    assert calls[2].startswith(COPY_GREEN)  # green's client, out of its image, first
    assert calls[3:] == [NGINX_TEST, "tested cmschat-green:8000", NGINX_RELOAD]
    # nginx serves green's client now, through the link, and keeps the one before.
    assert host.served() == f"cmschat-green:{WEB_IN_IMAGE}"
    assert host.web.is_symlink() and str(host.web.readlink()).startswith("web.green.")
    assert host.copies() == {"web.checkout", str(host.web.readlink())}
    assert "web client web.green." in result.stdout
    # docker compose ran where compose.yaml is.
    assert set(host.dirs.read_text().split()) == {str(host.compose)}
    assert one_line(host.switch("status").stdout) == "green"

    green_copy = str(host.web.readlink())
    back = host.switch("blue")
    assert back.returncode == 0, back.stderr
    assert host.active.read_text() == BLUE
    assert host.active.stat().st_ino == inode
    assert one_line(host.switch("status").stdout) == "blue"
    assert host.served() == f"cmschat-blue:{WEB_IN_IMAGE}"
    # Blue's copy and the previous (green's): the checkout's first copy is gone.
    assert host.copies() == {str(host.web.readlink()), green_copy}


def test_a_second_switch_while_one_runs_is_refused_and_changes_nothing(host: Host) -> None:
    lock = host.compose / "nginx" / ".switch.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a first switch-colour.sh holds it
        refused = host.switch("green")
    assert refused.returncode == 1
    assert one_line(refused.stderr) == (
        "switch-colour: another switch-colour.sh is running: nothing switched"
    )
    assert host.active.read_text() == BLUE
    assert host.calls() == []
    switched = host.switch("green")  # the lock is free again
    assert switched.returncode == 0, switched.stderr
    assert host.active.read_text() == GREEN


@pytest.mark.parametrize(
    ("health", "running"), [("unhealthy", True), ("starting", True), ("", False)]
)
def test_a_colour_not_healthy_is_refused_and_nginx_left_alone(
    host: Host, health: str, running: bool
) -> None:
    result = host.switch("green", health=health, running=running)
    assert result.returncode == 1
    assert "cmschat-green" in one_line(result.stderr)
    assert result.stdout == ""
    assert host.active.read_text() == BLUE
    assert not any(call.startswith("compose exec") for call in host.calls())


def test_a_file_nginx_refuses_is_put_back_and_nginx_not_reloaded(host: Host) -> None:
    inode = host.active.stat().st_ino
    result = host.switch("green", nginx_test=1)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "blue stays active" in line and "host not found in upstream" in line
    assert host.active.read_text() == BLUE
    assert host.active.stat().st_ino == inode
    calls = host.calls()
    assert "tested cmschat-green:8000" in calls  # nginx -t saw the new file
    assert NGINX_RELOAD not in calls
    assert (host.served(), host.copies()) == ("checkout", {"web.checkout"})


def test_a_failed_reload_puts_the_previous_file_back(host: Host) -> None:
    inode = host.active.stat().st_ino
    result = host.switch("green", reload=1)
    assert result.returncode == 1
    assert "blue stays active" in one_line(result.stderr)
    assert host.active.read_text() == BLUE
    assert host.active.stat().st_ino == inode
    assert host.calls()[-1] == NGINX_RELOAD
    assert (host.served(), host.copies()) == ("checkout", {"web.checkout"})


def test_a_web_client_that_cannot_be_copied_switches_nothing(host: Host) -> None:
    result = host.switch("green", copy=1)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "could not copy cmschat-green's web client, nothing switched" in line
    assert "Could not find the file" in line
    assert host.active.read_text() == BLUE
    assert not any(call.startswith("compose exec") for call in host.calls())
    assert (host.served(), host.copies()) == ("checkout", {"web.checkout"})  # no half copy


def test_without_the_web_link_it_says_to_run_make_secrets(host: Host) -> None:
    host.web.unlink()
    result = host.switch("green")
    assert result.returncode == 1
    assert "web-root/web is not a link: run ./make-secrets.sh" in one_line(result.stderr)
    assert host.active.read_text() == BLUE


@pytest.mark.parametrize("args", [[], ["purple"], ["green", "blue"], ["--help"]])
def test_a_bad_argument_is_a_usage_error(host: Host, args: list[str]) -> None:
    result = host.switch(*args)
    assert result.returncode == 2
    assert "usage" in one_line(result.stderr)
    assert host.active.read_text() == BLUE
    assert host.calls() == []


def test_without_active_conf_it_says_to_run_make_secrets(host: Host) -> None:
    # What Docker leaves when `compose up` ran before make-secrets.sh: a directory.
    host.active.unlink()
    host.active.mkdir()
    result = host.switch("green")
    assert result.returncode == 1
    assert "make-secrets.sh" in one_line(result.stderr)
    assert host.calls() == []


def test_make_secrets_makes_active_conf_on_blue_once(made_secrets: Path) -> None:
    active = made_secrets / "nginx" / "active.conf"
    assert active.is_file() and active.read_text() == BLUE
    assert active.stat().st_mode & 0o777 == 0o644  # read by nginx, whoever it runs as
    active.write_text(GREEN)
    try:
        again = run([made_secrets / "make-secrets.sh"], timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert active.read_text() == GREEN  # a second run keeps the colour nginx is on
    finally:
        active.write_text(BLUE)


def test_make_secrets_serves_the_checkouts_web_client_until_a_switch(
    made_secrets: Path,
) -> None:
    web = made_secrets / "web-root" / "web"
    assert web.is_symlink() and str(web.readlink()) == "web.checkout"
    assert (web / "index.html").read_bytes() == (REPO / "web" / "index.html").read_bytes()
    for path in [web.parent, *web.resolve().rglob("*")]:  # nginx's workers read them
        assert path.stat().st_mode & 0o004, path
    again = run([made_secrets / "make-secrets.sh"], timeout=60)
    assert str(web.readlink()) == "web.checkout", again.stdout + again.stderr


def test_active_conf_is_never_committed() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (
        ACTIVE_UPSTREAM,
        ACTIVE_UPSTREAM.with_name("active.conf.previous"),
        COMPOSE_DIR / "web-root",
    ):
        ignored = run(["git", "-C", REPO, "check-ignore", "-q", path], timeout=30)
        assert ignored.returncode == 0, f"{path.relative_to(REPO)} is not in .gitignore"


def test_status_of_an_upstream_naming_no_colour_is_unknown(host: Host) -> None:
    host.active.write_text("upstream cmschat_app {\n    server 10.0.0.9:8000;\n}\n")
    result = host.switch("status")
    assert (result.returncode, one_line(result.stdout)) == (1, "unknown")
    assert host.calls() == []
