"""Running a tool to completion in the tests: its output captured as text, never raising on
its exit status (the tests assert on it), and dying with pytest; and stopping a daemon the
tests started."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import children


def run(
    command: Sequence[str | Path], *, timeout: float = 60, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``command`` to completion (``options``: ``env``, ``cwd``, ``input``...)."""
    return subprocess.run(  # noqa: S603 - the tests' own tools on their own files
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=children.with_parent(),
        **options,
    )


def stop(
    process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM, within: float = 10
) -> None:
    """Stop ``process`` with ``how`` (its graceful stop), killed if it is still running
    ``within`` seconds later."""
    if process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=within)
