"""``cmschat serve`` with tracemalloc on, for finding what the server's memory is made of.

Not run by hand: ``idle_connections.py --tracemalloc OUT`` starts the server through it.
SIGUSR1 takes the baseline snapshot; SIGUSR2 writes to ``$BENCH_TRACEMALLOC_OUT`` the
allocations that grew since then, grouped by line and by call stack
(``$BENCH_TRACEMALLOC_FRAMES`` frames, default 6). tracemalloc sees Python-level
allocations only (objects, and buffers allocated through Python's allocator), not
memory that C libraries allocate with malloc directly (e.g. libuv handles).

    .venv/bin/python bench/traced_serve.py serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "6"))
_baseline: list[tracemalloc.Snapshot] = []


def _take_baseline(_signum: int, _frame: FrameType | None) -> None:
    _baseline[:] = [tracemalloc.take_snapshot()]


def _write_growth(_signum: int, _frame: FrameType | None) -> None:
    out = Path(os.environ.get("BENCH_TRACEMALLOC_OUT", "tracemalloc.txt"))
    snapshot = tracemalloc.take_snapshot()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    snapshot = snapshot.filter_traces(ignore)
    base = _baseline[0].filter_traces(ignore) if _baseline else None
    lines = []
    current, _peak = tracemalloc.get_traced_memory()
    lines.append(f"traced now: {current / 1024 / 1024:.1f} MiB")
    if base is not None:
        by_line = snapshot.compare_to(base, "lineno")
        total = sum(stat.size_diff for stat in by_line)
        lines.append(f"traced growth since baseline: {total / 1024 / 1024:.1f} MiB")
        lines.append("\n== growth by line ==")
        for stat in by_line[:40]:
            lines.append(
                f"{stat.size_diff / 1024:10.0f} KiB {stat.count_diff:+9d} blocks  "
                f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}"
            )
        lines.append("\n== growth by call stack ==")
        for stat in snapshot.compare_to(base, "traceback")[:15]:
            lines.append(f"{stat.size_diff / 1024:10.0f} KiB {stat.count_diff:+9d} blocks")
            lines.extend(f"      {frame.filename}:{frame.lineno}" for frame in stat.traceback)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


def main() -> None:
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, _take_baseline)
    signal.signal(signal.SIGUSR2, _write_growth)
    from cmschat.cli import main as cmschat_main

    sys.argv = ["cmschat", *sys.argv[1:]]
    cmschat_main()


if __name__ == "__main__":
    main()
