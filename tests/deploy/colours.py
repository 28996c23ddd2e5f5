"""cmschat instances started and stopped by the release tool (``deploy/release``) in the
tests, through its ``command`` runner, as systemd or Docker would for an operator.

Each slot serves its own web directory, whose ``colour.txt`` the start command writes as
``SLOT:IMAGE``: a request for it through nginx tells which slot, and which release of it,
answered. The start command returns once the server is started; the stop command sends
SIGTERM and returns once the server has exited (its drain done).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.commands import run

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "deploy" / "release" / "release.py"
SLOTS = ("blue", "green")


def runner_settings(directory: Path) -> dict[str, str]:
    """The ``RELEASE_*`` variables of the command runner, its files in ``directory``."""
    for slot in SLOTS:
        (directory / f"web-{slot}").mkdir(exist_ok=True)
    start = (
        f"cd {directory} && printf '%s\\n' {{slot}}:{{image}} > web-{{slot}}/colour.txt && "
        # An image named "broken" stands for one that cannot start: a bad setting.
        "{{ [ {image} != broken ] || export CMSCHAT_LOG_LEVEL=NOPE; }} && "
        f"CMSCHAT_WEB_DIR={directory}/web-{{slot}} nohup {sys.executable} -m cmschat serve "
        f"--host {{host}} --port {{port}} > {{slot}}.log 2>&1 & echo $! > {directory}/{{slot}}.pid"
    )
    stop = (
        f"pid=$(cat {directory}/{{slot}}.pid 2>/dev/null) || exit 0; "
        "kill -TERM $pid 2>/dev/null || exit 0; "
        "timeout {stop_timeout} tail -s 0.1 --pid=$pid -f /dev/null"
    )
    return {
        "RELEASE_RUNNER": "command",
        "RELEASE_START_CMD": start,
        "RELEASE_STOP_CMD": stop,
        "RELEASE_STOP_TIMEOUT": "40",
    }


def release(env: dict[str, str], *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``release.py ARGS`` with ``env`` and ``settings`` (as ``RELEASE_*`` variables)."""
    env = dict(env)
    env.update({f"RELEASE_{key}": value for key, value in settings.items()})
    return run([sys.executable, str(RELEASE), *args], timeout=600, env=env)


def pid_of(directory: Path, slot: str) -> int | None:
    """The pid the runner last started ``slot`` with (None: never started)."""
    path = directory / f"{slot}.pid"
    return int(path.read_text()) if path.exists() else None


def running(directory: Path, slot: str) -> bool:
    """Whether ``slot``'s last started server is alive (a zombie is not)."""
    pid = pid_of(directory, slot)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().rsplit(") ", 1)[1][:1] != "Z"


def kill_left(directory: Path) -> None:
    """Kill whatever the runner started and the test left running."""
    for slot in SLOTS:
        pid = pid_of(directory, slot)
        if pid is not None and running(directory, slot):
            os.kill(pid, signal.SIGKILL)
