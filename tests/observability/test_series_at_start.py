"""Series an alert or dashboard reads exist from the process's start, at zero: a rate over a
series that appears with its first increment misses that increment, and an absent series
reads as "no data" rather than "none"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cmschat
from bench import children

FRESH_SCRAPE = (
    "from prometheus_client import generate_latest;"
    "from cmschat.observability import instruments;"
    "print(generate_latest().decode())"
)


def test_a_fresh_process_exports_the_conflict_series_at_zero() -> None:
    # A process of its own: this one's counters have seen other tests' requests. It
    # imports the cmschat this process does.
    source = str(Path(cmschat.__file__).parents[1])
    result = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-c", FRESH_SCRAPE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": source},
        preexec_fn=children.with_parent(),
    )
    assert 'cmschat_database_conflicts_total{code="database_conflict"} 0.0' in result.stdout
