#!/usr/bin/env python3
"""Blue/green and rolling releases of cmschat behind nginx (docs/deploy.md, "Releases").

    release.py blue-green IMAGE   start the idle colour with IMAGE, wait for its /readyz,
                                  point nginx at it, check it, then drain and stop the old
                                  colour; if anything fails before that, nginx is pointed
                                  back and the new colour stopped: the old never stopped
    release.py rolling IMAGE      every live slot replaced by IMAGE one at a time, each
                                  taken out of nginx before it drains and put back once ready
    release.py up IMAGE           every idle slot started with IMAGE and put live too (the
                                  layout `rolling` works on)
    release.py rollback           blue-green with the image the last release replaced
    release.py status             the live slots, their images and their /readyz

Exit status: 0 released; 1 failed before nginx was switched (nothing changed); 2 switched,
failed its checks and rolled back; 3 a bad configuration or command line; 4 another release
holds the lock.

Settings (``--config FILE`` of KEY=VALUE lines, by default /etc/cmschat/release.env if it
exists, then ``RELEASE_*`` variables, which win):

    SLOTS            "blue=127.0.0.1:8001 green=127.0.0.1:8002": name=address, where nginx
                     and this tool reach each instance
    UPSTREAM_FILE    /etc/nginx/cmschat/upstream.conf, the file nginx includes; written
                     whole by this tool (upstream ``cmschat_app``)
    UPSTREAM_EXTRA   "keepalive 32; keepalive_timeout 60s;": lines added inside the upstream
                     block (the timeout under CMSCHAT_HTTP_KEEP_ALIVE_SECONDS, 75 s)
    NGINX_TEST       "nginx -t"            NGINX_RELOAD   "nginx -s reload"
    NGINX_PID_FILE   /run/nginx.pid: after a reload the tool waits until the old workers
                     stop taking requests before it stops an instance they may still use
    RUNNER           docker | command
    ENV_FILE         /etc/cmschat/cmschat.env (docker runner)
    STOP_TIMEOUT     45 (seconds; more than CMSCHAT_SHUTDOWN_GRACE_SECONDS)
    START_CMD, STOP_CMD   the command runner's shell commands, with {slot} {host} {port}
                     {image} {stop_timeout}; START_CMD returns once the instance is started
                     (not ready), STOP_CMD once it has exited
    MIGRATE_CMD      run once before the new instances start, with {image} (expand-only
                     migrations with the owner account: the old code keeps running on them)
    READY_TIMEOUT    120 (seconds for a new instance's /readyz to answer 200)
    CHECK_URL        checked through nginx after each switch (e.g. https://chat.example.com/readyz)
    CHECK_CMD        a smoke test run after each switch, with {image}; non-zero = failed
    CHECKS           3 (CHECK_URL must answer 2xx this many times in a row, a second apart,
    CHECK_WINDOW     30  within this many seconds of the switch)
    STATE_FILE       the upstream file's directory/release-state.json: images per slot
    WEB_DIR          where nginx serves the web client from (e.g. /srv/cmschat/web; empty:
                     left alone): made a symlink to a copy of each release's client,
                     switched with nginx and back on a rollback
    WEB_CMD          fills {dir} with {image}'s web client (docker runner: copied out of
                     the image)

Only the standard library: it runs on any host with Python 3.9 or newer.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULTS = {
    "SLOTS": "blue=127.0.0.1:8001 green=127.0.0.1:8002",
    "UPSTREAM_FILE": "/etc/nginx/cmschat/upstream.conf",
    "UPSTREAM_EXTRA": "keepalive 32; keepalive_timeout 60s;",
    "NGINX_TEST": "nginx -t",
    "NGINX_RELOAD": "nginx -s reload",
    "NGINX_PID_FILE": "/run/nginx.pid",
    "RUNNER": "docker",
    "ENV_FILE": "/etc/cmschat/cmschat.env",
    "STOP_TIMEOUT": "45",
    "START_CMD": "",
    "STOP_CMD": "",
    "MIGRATE_CMD": "",
    "READY_TIMEOUT": "120",
    "CHECK_URL": "",
    "CHECK_CMD": "",
    "CHECKS": "3",
    "CHECK_WINDOW": "30",
    "STATE_FILE": "",
    "WEB_DIR": "",
    "WEB_CMD": "",
}

DOCKER_START = (
    "docker rm -f cmschat-{slot} >/dev/null 2>&1; "
    "docker run -d --name cmschat-{slot} --restart unless-stopped --env-file {env_file} "
    "-p {host}:{port}:8000 -v cmschat-{slot}-data:/var/lib/cmschat "
    "--stop-timeout {stop_timeout} {image}"
)
DOCKER_STOP = "docker stop -t {stop_timeout} cmschat-{slot} && docker rm cmschat-{slot}"
DOCKER_WEB = (
    "docker create --name cmschat-web-export {image} >/dev/null "
    "&& docker cp cmschat-web-export:/opt/cmschat/lib/python3.11/site-packages/cmschat/web/. "
    "{dir}; status=$?; docker rm cmschat-web-export >/dev/null 2>&1; exit $status"
)

DEFAULT_CONFIG = "/etc/cmschat/release.env"
FAILED, ROLLED_BACK, BAD_CONFIG, LOCKED = 1, 2, 3, 4


class Failed(Exception):
    """A step failed; ``status`` is the exit status the release ends with."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class State:
    """What the releases remember (STATE_FILE): each live slot's image, and the image the
    last release replaced (what ``rollback`` goes back to)."""

    images: dict[str, str]
    previous: str | None


@dataclass(frozen=True)
class Slot:
    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def say(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, flush=True)


def load_settings(config: str | None) -> dict[str, str]:
    settings = dict(DEFAULTS)
    if config:
        try:
            lines = Path(config).read_text().splitlines()
        except OSError as error:
            raise Failed(f"cannot read {config}: {error.strerror}", BAD_CONFIG) from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.strip().removeprefix("RELEASE_")
            if not sep or key not in DEFAULTS:
                raise Failed(f"{config}:{number}: not a known KEY=VALUE setting", BAD_CONFIG)
            settings[key] = value.strip().strip("'\"")
    for key in DEFAULTS:
        if f"RELEASE_{key}" in os.environ:
            settings[key] = os.environ[f"RELEASE_{key}"]
    return settings


def parse_slots(text: str) -> list[Slot]:
    slots = []
    for item in text.split():
        match = re.fullmatch(r"([a-z][a-z0-9-]*)=([^\s:]+):(\d+)", item)
        if not match:
            raise Failed(f"SLOTS: {item!r} is not name=host:port", BAD_CONFIG)
        slots.append(Slot(match[1], match[2], int(match[3])))
    if len({slot.name for slot in slots}) != len(slots) or not slots:
        raise Failed("SLOTS: give at least one slot, each name once", BAD_CONFIG)
    return slots


class Release:
    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings
        self.slots = parse_slots(settings["SLOTS"])
        self.upstream = Path(settings["UPSTREAM_FILE"])
        self.nginx_pid_file = Path(settings["NGINX_PID_FILE"])
        self.state_path = Path(
            settings["STATE_FILE"] or self.upstream.parent / "release-state.json"
        )
        try:
            self.stop_timeout = int(settings["STOP_TIMEOUT"])
            self.ready_timeout = float(settings["READY_TIMEOUT"])
            self.checks = int(settings["CHECKS"])
            self.check_window = float(settings["CHECK_WINDOW"])
        except ValueError as error:
            raise Failed(f"a number setting is not a number: {error}", BAD_CONFIG) from None
        self.web_dir = Path(settings["WEB_DIR"]) if settings["WEB_DIR"] else None
        self.web_cmd = settings["WEB_CMD"]
        runner = settings["RUNNER"]
        if runner == "docker":
            self.start_cmd = settings["START_CMD"] or DOCKER_START
            self.stop_cmd = settings["STOP_CMD"] or DOCKER_STOP
            self.web_cmd = self.web_cmd or DOCKER_WEB
        elif runner == "command":
            if not settings["START_CMD"] or not settings["STOP_CMD"]:
                raise Failed("RUNNER=command needs START_CMD and STOP_CMD", BAD_CONFIG)
            if self.web_dir is not None and not self.web_cmd:
                raise Failed("WEB_DIR with RUNNER=command needs WEB_CMD", BAD_CONFIG)
            self.start_cmd, self.stop_cmd = settings["START_CMD"], settings["STOP_CMD"]
        else:
            raise Failed(f"RUNNER: {runner!r} is neither docker nor command", BAD_CONFIG)

    # --- nginx's upstream file -------------------------------------------------------

    def live(self) -> list[Slot]:
        """The slots nginx sends traffic to now (its upstream file's servers not ``down``)."""
        try:
            text = self.upstream.read_text()
        except FileNotFoundError:
            return []
        addresses = re.findall(r"^\s*server\s+(\S+?)(\s+down)?\s*;", text, re.MULTILINE)
        up = {address for address, down in addresses if not down}
        return [slot for slot in self.slots if slot.address in up]

    def render(self, up: list[Slot], down: list[Slot]) -> str:
        lines = [
            "# Written by deploy/release/release.py; edit its SLOTS, not this file.",
            "# live: " + " ".join(slot.name for slot in up),
            "upstream cmschat_app {",
        ]
        lines += [f"    server {slot.address};" for slot in up]
        lines += [f"    server {slot.address} down;" for slot in down]
        extra = (part.strip() for part in self.settings["UPSTREAM_EXTRA"].split(";"))
        lines += [f"    {part};" for part in extra if part]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def point_nginx(self, up: list[Slot], down: tuple[Slot, ...] | list[Slot] = ()) -> None:
        """Write the upstream file (atomically), test nginx's configuration with it and
        reload; on a failed test or reload the previous file is put back, so that the file
        says what nginx runs (a later reload, a certificate renewal's, switches nothing)."""
        previous = self.upstream.read_text() if self.upstream.exists() else None

        def put_back() -> None:
            if previous is None:
                self.upstream.unlink()
            else:
                self.write_upstream(previous)

        self.write_upstream(self.render(up, list(down)))
        test = self.shell(self.settings["NGINX_TEST"])
        if test.returncode != 0:
            put_back()
            raise Failed(f"nginx refused the new upstream file: {last_line(test.stdout)}")
        before = nginx_workers(self.nginx_pid_file)
        reload = self.shell(self.settings["NGINX_RELOAD"])
        if reload.returncode != 0:
            put_back()
            raise Failed(f"nginx reload failed: {last_line(reload.stdout)}")
        self.await_reload(before)
        say(
            "nginx: live "
            + (" ".join(slot.name for slot in up) or "nothing")
            + ("; out: " + " ".join(slot.name for slot in down) if down else "")
        )

    def await_reload(self, before: dict[int, bool] | None) -> None:
        """Wait until nginx's workers of the old configuration stopped taking requests:
        ``nginx -s reload`` returns at once, and an instance must not be stopped while a
        worker that still sends it new requests is accepting them."""
        if before is None:
            say("nginx: no master found (NGINX_PID_FILE); not waiting for its workers")
            return
        deadline = time.monotonic() + 30
        while True:
            now = nginx_workers(self.nginx_pid_file) or {}
            serving = {pid for pid, accepting in now.items() if accepting}
            old_serving = serving & {pid for pid, accepting in before.items() if accepting}
            if serving and not old_serving:
                return
            if time.monotonic() > deadline:
                raise Failed("nginx's old workers still take requests 30 s after the reload")
            time.sleep(0.05)

    def write_upstream(self, text: str) -> None:
        temporary = self.upstream.with_name(self.upstream.name + ".new")
        with temporary.open("w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.upstream)

    # --- instances -------------------------------------------------------------------

    def fill(self, template: str, slot: Slot | None, image: str, directory: str = "") -> str:
        values = {
            "image": image,
            "stop_timeout": str(self.stop_timeout),
            "env_file": self.settings["ENV_FILE"],
            "dir": directory,
        }
        if slot is not None:
            values.update(slot=slot.name, host=slot.host, port=str(slot.port))
        return template.format(**{key: shlex.quote(value) for key, value in values.items()})

    def shell(self, command: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(  # noqa: S603 - the operator's own commands, by design
                ["/bin/sh", "-c", command],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 124, f"timed out after {timeout} s", "")

    def start(self, slot: Slot, image: str) -> None:
        say(f"{slot.name}: starting {image}")
        started = self.shell(self.fill(self.start_cmd, slot, image), timeout=300)
        if started.returncode != 0:
            raise Failed(f"{slot.name} did not start: {last_line(started.stdout)}")
        began = time.monotonic()
        deadline = began + self.ready_timeout
        while not ready(slot):
            if time.monotonic() > deadline:
                raise Failed(f"{slot.name} was not ready within {self.ready_timeout:g} s")
            time.sleep(0.5)
        say(f"{slot.name}: ready in {time.monotonic() - began:.1f} s")

    def start_fresh(self, slot: Slot, image: str) -> None:
        """``start``, after stopping a leftover still answering on the idle ``slot`` (its
        /readyz would pass for the new image's); a slot that fails to start is stopped."""
        if ready(slot):
            say(f"{slot.name}: idle but answering; stopping it first")
            if not self.stop(slot):
                raise Failed(f"{slot.name} is idle but running and would not stop")
        try:
            self.start(slot, image)
        except Failed:
            self.stop(slot)
            raise

    def stop(self, slot: Slot) -> bool:
        """Drain and stop ``slot`` (SIGTERM through the runner); False if it failed."""
        say(f"{slot.name}: draining")
        began = time.monotonic()
        stopped = self.shell(self.fill(self.stop_cmd, slot, ""), timeout=self.stop_timeout + 30)
        if stopped.returncode != 0:
            say(f"{slot.name}: stop failed: {last_line(stopped.stdout)}")
            return False
        say(f"{slot.name}: stopped in {time.monotonic() - began:.1f} s")
        return True

    def check(self, image: str) -> None:
        """After a switch: CHECK_URL through nginx, CHECKS times in a row a second apart
        within CHECK_WINDOW seconds (``nginx -s reload`` returns before the new workers
        serve), then CHECK_CMD."""
        url = self.settings["CHECK_URL"]
        passed, status = 0, 0
        deadline = time.monotonic() + self.check_window
        while url and passed < self.checks:
            status = http_status(url)
            passed = passed + 1 if 200 <= status < 300 else 0
            if passed >= self.checks:
                break
            if time.monotonic() > deadline:
                raise Failed(f"{url} answered {status or 'nothing'} after the switch")
            time.sleep(1 if passed else 0.2)
        command = self.settings["CHECK_CMD"]
        if command:
            checked = self.shell(self.fill(command, None, image), timeout=300)
            if checked.returncode != 0:
                raise Failed(f"the check failed after the switch: {last_line(checked.stdout)}")

    def migrate(self, image: str) -> None:
        command = self.settings["MIGRATE_CMD"]
        if command:
            say("migrating (expand only)")
            migrated = self.shell(self.fill(command, None, image), timeout=1800)
            if migrated.returncode != 0:
                raise Failed(f"the migration failed: {last_line(migrated.stdout)}")

    # --- the web client nginx serves ---------------------------------------------------

    def stage_web(self, image: str) -> Path | None:
        """A copy of ``image``'s web client beside WEB_DIR (None: WEB_DIR unset)."""
        if self.web_dir is None:
            return None
        digest = hashlib.sha256(image.encode()).hexdigest()[:12]
        copy = self.web_dir.with_name(f"{self.web_dir.name}.{digest}")
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        filled = self.shell(self.fill(self.web_cmd, None, image, str(copy)), timeout=300)
        if filled.returncode != 0 or not (copy / "index.html").is_file():
            shutil.rmtree(copy, ignore_errors=True)
            raise Failed(f"the web client of {image} was not copied: {last_line(filled.stdout)}")
        return copy

    def point_web(self, copy: Path | None) -> Path | None:
        """WEB_DIR made a symlink to ``copy`` in one step (a rename over it); returns what it
        showed before (None: nothing, or ``copy`` is None)."""
        if copy is None or self.web_dir is None:
            return None
        before: Path | None = None
        if self.web_dir.is_symlink():
            before = Path(os.readlink(self.web_dir))
        elif self.web_dir.exists():  # an operator's copy: kept beside, as the way back
            before = self.web_dir.with_name(self.web_dir.name + ".initial")
            shutil.rmtree(before, ignore_errors=True)
            os.replace(self.web_dir, before)
        link = self.web_dir.with_name(self.web_dir.name + ".link")
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(copy, link)
        os.replace(link, self.web_dir)
        if before != copy:
            say(f"web client: {copy.name}")
        return before

    def prune_web(self, keep: set[Path | None]) -> None:
        """The copies of earlier releases' clients, but for ``keep`` (the live one and the
        one a rollback would go back to)."""
        if self.web_dir is None:
            return
        for copy in self.web_dir.parent.glob(self.web_dir.name + ".*"):
            if copy.is_dir() and not copy.is_symlink() and copy not in keep:
                shutil.rmtree(copy, ignore_errors=True)

    # --- state -----------------------------------------------------------------------

    def state(self) -> State:
        """The state file's content; an empty state when it is missing or unreadable."""
        try:
            loaded = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            loaded = None
        if not isinstance(loaded, dict):
            return State({}, None)
        images = loaded.get("images")
        previous = loaded.get("previous")
        return State(
            {k: v for k, v in images.items() if isinstance(v, str)}
            if isinstance(images, dict)
            else {},
            previous if isinstance(previous, str) and previous else None,
        )

    def remember(self, state: State) -> None:
        temporary = self.state_path.with_name(self.state_path.name + ".new")
        data = {"images": state.images, "previous": state.previous}
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, self.state_path)

    # --- the releases ----------------------------------------------------------------

    def blue_green(self, image: str) -> None:
        if len(self.slots) != 2:
            raise Failed("blue-green needs exactly two SLOTS", BAD_CONFIG)
        live = self.live()
        if len(live) > 1:
            raise Failed("both slots are live (a rolling layout): use `rolling`", BAD_CONFIG)
        old = live[0] if live else None
        new = next(slot for slot in self.slots if slot != old)
        state = self.state()
        web = self.stage_web(image)
        self.migrate(image)
        self.start_fresh(new, image)
        web_before = self.point_web(web)
        try:
            self.point_nginx([new])
        except Failed:
            # nginx still sends to the old colour (the file was put back): undo the rest.
            self.point_web(web_before)
            self.stop(new)
            raise
        try:
            self.check(image)
        except Failed as failure:
            say(f"rolling back: {failure}")
            self.point_nginx([old] if old else [], [] if old else [new])
            self.point_web(web_before)
            self.stop(new)
            raise Failed(str(failure), ROLLED_BACK) from None
        self.prune_web({web, web_before})
        previous = state.images.pop(old.name, None) if old else None
        state.images[new.name] = image
        state.previous = previous
        if old is not None and not self.stop(old):
            say(f"warning: {old.name} is out of nginx but did not stop; stop it by hand")
        self.remember(state)
        say(f"released {image} on {new.name}")

    def rolling(self, image: str) -> None:
        live = self.live()
        if not live:
            raise Failed("nothing is live: start with `blue-green`", BAD_CONFIG)
        state = self.state()
        state.previous = next(iter(state.images.values()), None)
        web = self.stage_web(image)
        web_before: Path | None = None
        self.migrate(image)
        for slot in live:
            others = [other for other in live if other != slot]
            if not others:
                raise Failed("a rolling release needs two live slots or more", BAD_CONFIG)
            self.point_nginx(others, [slot])
            if not self.stop(slot):
                raise Failed(f"{slot.name} would not stop; it is out of nginx, the others serve")
            try:
                self.start_fresh(slot, image)
            except Failed as failure:
                # The others still serve the old image; this slot stays out of nginx.
                raise Failed(f"{failure}; {slot.name} left out of nginx", FAILED) from None
            if slot == live[0]:  # the first of the new release to serve: its client too
                web_before = self.point_web(web)
            self.point_nginx(live)
            state.images[slot.name] = image
            self.remember(state)
        self.check(image)
        self.prune_web({web, web_before})
        say(f"released {image} on " + " ".join(slot.name for slot in live))

    def up(self, image: str) -> None:
        """Every idle slot started with ``image`` and put live beside the live ones: the
        layout a rolling release replaces one slot at a time."""
        live = self.live()
        idle = [slot for slot in self.slots if slot not in live]
        if not idle:
            raise Failed("every slot is live already", BAD_CONFIG)
        state = self.state()
        self.migrate(image)
        for slot in idle:
            self.start_fresh(slot, image)
        self.point_nginx(self.slots)
        self.check(image)
        state.images.update({slot.name: image for slot in idle})
        self.remember(state)
        say(f"live: {' '.join(slot.name for slot in self.slots)}")

    def rollback(self) -> None:
        previous = self.state().previous
        if previous is None:
            raise Failed("no previous image is recorded: run blue-green with the one you want")
        say(f"rolling back to {previous}")
        self.blue_green(previous)

    def status(self) -> None:
        live = {slot.name for slot in self.live()}
        images = self.state().images
        for slot in self.slots:
            answer = "ready" if ready(slot) else "not answering /readyz 200"
            print(
                f"{slot.name:8} {slot.address:21} {'live' if slot.name in live else 'idle':5} "
                f"{images.get(slot.name, '-')}  {answer}"
            )


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 - the operator's URL
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return 0


def nginx_workers(pid_file: Path) -> dict[int, bool] | None:
    """nginx's worker processes: pid -> still accepting requests (not "shutting down");
    None when no master runs under ``pid_file``."""
    try:
        master = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    workers: dict[int, bool] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == master and "worker process" in title:
            workers[int(entry.name)] = "shutting down" not in title
    return workers if (Path("/proc") / str(master)).exists() else None


def ready(slot: Slot) -> bool:
    return http_status(f"http://{slot.address}/readyz") == 200


def last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@contextlib.contextmanager
def locked(path: Path):
    """One release at a time on this host."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Failed(f"another release holds {path}", LOCKED) from None
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="a file of KEY=VALUE settings (see the module doc)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("blue-green", "rolling", "up"):
        commands.add_parser(name).add_argument("image")
    commands.add_parser("rollback")
    commands.add_parser("status")
    arguments = parser.parse_args(argv)
    began = time.monotonic()
    try:
        config = arguments.config
        if config is None and Path(DEFAULT_CONFIG).exists():
            config = DEFAULT_CONFIG
        release = Release(load_settings(config))
        if arguments.command == "status":
            release.status()
            return 0
        with locked(release.upstream.with_name(release.upstream.name + ".lock")):
            if arguments.command == "blue-green":
                release.blue_green(arguments.image)
            elif arguments.command == "rolling":
                release.rolling(arguments.image)
            elif arguments.command == "up":
                release.up(arguments.image)
            else:
                release.rollback()
    except Failed as failure:
        outcome = "rolled back" if failure.status == ROLLED_BACK else "failed"
        print(f"release {outcome}: {failure}", file=sys.stderr)
        return failure.status
    except OSError as error:
        print(f"release failed: {error}", file=sys.stderr)
        return FAILED
    say(f"done in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
