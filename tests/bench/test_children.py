"""A server the suite starts dies with the process that started it (``bench/children.py``),
even when that process is killed outright, as a CI timeout kills pytest."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import children
from tests.processes import clean_env, cmschat

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN = 30.0

# Starts a real ``cmschat serve`` through the suite's own helper, says its pid, then waits.
PARENT = """
import json, sys
from pathlib import Path
from tests.processes import running_server
with running_server(Path(sys.argv[1]), json.loads(sys.argv[2]), "orphan") as server:
    print(server.process.pid, flush=True)
    sys.stdin.read()
"""


def gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` (not our child) ends within ``within`` seconds."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(handle, select.POLLIN)  # readable once the process has ended
        return bool(poller.poll(within * 1000))
    finally:
        os.close(handle)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_DATA_DIR=str(tmp_path / "var"),
        CMSCHAT_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    )
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    with subprocess.Popen(  # noqa: S603 - our own interpreter, fixed script
        [sys.executable, "-c", PARENT, str(tmp_path), json.dumps(env)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=children.with_parent(),
    ) as parent:
        assert parent.stdout is not None
        server = int(parent.stdout.readline())
        try:
            assert not gone(server, 0)  # serving, its parent alive
            parent.kill()
            parent.wait(timeout=GONE_WITHIN)
            assert gone(server, GONE_WITHIN)
        finally:
            if not gone(server, 0):
                os.kill(server, signal.SIGKILL)
