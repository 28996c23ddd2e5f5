"""Where a server's CPU went, grouped: read a ``py-spy record --format raw`` profile.

Each sample is put in one group by the function on top of its stack (server, event loop,
driver, SQLAlchemy, cmschat, logging/metrics, ...), and in one path by what is below it:
the fan-out (a connection's sender, ``Delivery.drain``: per delivered frame), the write of
a batch (``GroupCommit``), the handling of client frames (``FrameActions``: parse, admit,
ack), the reading of frames (uvicorn's ``data_received`` and the receive loop) or other.
A direct write of a pre-built frame (``write_frame``) is the kernel's socket write.

Run on a profile taken with ``BENCH_PYSPY_GIL=1`` (only the thread holding the GIL)::

    .venv/bin/python bench/profile_split.py /tmp/cmschat-bench-profiles/ws_sends-sqlite-1w.txt
"""

from __future__ import annotations

import sys
from collections import Counter

GROUPS = (
    ("kernel (socket write)", ("write_frame",)),
    (
        "server (uvicorn, wsproto, h11, httptools, starlette)",
        ("uvicorn/", "wsproto/", "h11/", "httptools", "cmschat/api/transport.py", "starlette/"),
    ),
    ("driver (aiosqlite, asyncmy, redis)", ("aiosqlite/", "asyncmy/", "redis/", "sqlite3")),
    ("SQLAlchemy", ("sqlalchemy/", "greenlet")),
    ("logging/metrics/tracing", ("prometheus_client/", "logging/", "opentelemetry/", "ecs_")),
    ("validation/JSON (pydantic, orjson, json)", ("pydantic", "json/", "orjson")),
    ("cmschat", ("(cmschat/",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop", "runners.py", "selectors")),
)
PATHS = (
    ("fan-out (per delivered frame)", "Delivery.drain"),
    ("batch write (group commit)", "GroupCommit._write_all"),
    ("client frames (parse, admit, ack)", "FrameActions.handle"),
    ("reading frames", "data_received"),
    ("reading frames", "_receive_loop"),
)


def group_of(frame: str) -> str:
    """The group of the function on top of a stack."""
    for name, markers in GROUPS:
        if any(marker in frame for marker in markers):
            return name
    return "other (stdlib, GC)"


def main(path: str) -> None:
    groups: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    by_path: dict[str, Counter[str]] = {}
    total = 0
    with open(path) as profile:
        for line in profile:
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count, frames = int(count_text), stack.split(";")
            total += count
            group = group_of(frames[-1])
            groups[group] += count
            where = next((p for p, marker in PATHS if any(marker in f for f in frames)), "other")
            paths[where] += count
            by_path.setdefault(where, Counter())[group] += count
    print(f"{total} samples")
    print("by group (function on top):")
    for name, count in groups.most_common():
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("by path (what the work was for), and its groups:")
    for name, count in paths.most_common():
        inner = ", ".join(f"{g} {100 * c / count:.0f}%" for g, c in by_path[name].most_common(4))
        print(f"  {100 * count / total:5.1f}%  {name}: {inner}")


if __name__ == "__main__":
    main(sys.argv[1])
