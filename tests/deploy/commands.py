"""Running a tool to completion in the deploy tests: its output captured as text, never
raising on its exit status (the tests assert on it), and dying with pytest."""

from __future__ import annotations

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
