"""Self time grouped by layer (issue 16, point 7's split): whose code a request's CPU is in.

For a cProfile (``cprofile_layers``, used by ``request_cpu.py``) or a py-spy raw profile
(``pyspy_layers``; ``python bench/split.py PROFILE.txt [...]`` prints it). The layers:
the server and client (uvicorn, h11, httptools, wsproto, httpx), the event loop (asyncio, uvloop,
selectors, the epoll call), the driver (aiosqlite and its thread, asyncmy), the database
(sqlite3's C calls, i.e. SQLite itself; MariaDB runs in its own process), SQLAlchemy
(with greenlet, its async bridge), FastAPI/Starlette, orjson and pydantic, logging and metrics
libraries, cmschat (its observability middleware apart), the kernel (socket calls, as far
as a profile of Python sees them) and the rest of the standard library.
"""

from __future__ import annotations

import pstats
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cmschat observability (middleware, metrics, logs)", ("cmschat/observability/",)),
    # serve's HTTP protocol (uvicorn's, its response head rewritten) is the server's part.
    ("server (uvicorn, h11, httptools)", ("cmschat/api/transport.py",)),
    ("cmschat", ("/cmschat/", "cmschat/")),
    ("server (uvicorn, h11, httptools)", ("uvicorn/", "h11/", "httptools", "anyio/", "wsproto/")),
    ("client (httpx, in process)", ("httpx/", "httpcore/")),
    ("orjson, pydantic", ("orjson", "pydantic", "annotated_")),
    ("FastAPI/Starlette", ("fastapi/", "starlette/")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("greenlet (SQLAlchemy's async bridge)", ("greenlet",)),
    ("database (SQLite C)", ("sqlite3.", "libsqlite3", "_sqlite3")),
    (
        "driver (aiosqlite, asyncmy)",
        (
            "aiosqlite/",
            "asyncmy",
            "pymysql/",
            "threading.py",
            "queue.py",
            "_queue.",
            "_thread.",
        ),
    ),
    ("logging/metrics libraries", ("logging/", "prometheus_client/", "opentelemetry/", "json/")),
    ("kernel (socket calls)", ("_socket.", "libc.so", "libc-")),
    (
        "event loop (asyncio, uvloop)",
        (
            "asyncio/",
            "uvloop",
            "selectors.py",
            "select.epoll",
            "epoll_wait",
            "contextvars",
            "_asyncio",
        ),
    ),
)
OTHER = "standard library / other"


def layer_of(where: str) -> str:
    """The layer a function belongs to, from its file path (or a C function's owner)."""
    for layer, markers in RULES:
        if any(marker in where for marker in markers):
            return layer
    return OTHER


def ranked(counts: dict[str, float]) -> list[tuple[str, float]]:
    """Layers by share, largest first (percent of the total)."""
    total = sum(counts.values()) or 1.0
    return sorted(((k, 100 * v / total) for k, v in counts.items()), key=lambda kv: -kv[1])


def cprofile_layers(
    stats: pstats.Stats, moved: dict[tuple[str, str], str] | None = None
) -> list[tuple[str, float]]:
    """Self (total) time of a cProfile by layer. Only the profiled thread: aiosqlite's
    thread, where SQLite runs, is not in it (``request_cpu.py`` reports that apart).

    A built-in (``isinstance``, ``dict.get``...) that belongs to no layer of its own counts
    for the layers of its callers, in proportion of the time each call site spent in it.
    ``moved``: (path's end, function) -> layer, for a function whose self time is a call
    cProfile does not see (a Cython method's: uvloop's ``transport.write``).
    """
    counts: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, self_time, _cum, callers) in raw.items():
        layer = layer_of(filename if filename != "~" else function)
        for (end, name), to in (moved or {}).items():
            if function == name and filename.endswith(end):
                layer = to
        if filename == "~" and layer == OTHER and callers:
            for (caller_file, _l, caller_function), timing in callers.items():
                where = caller_file if caller_file != "~" else caller_function
                caller_layer = layer_of(where)
                counts[caller_layer] = counts.get(caller_layer, 0.0) + timing[2]
            continue
        counts[layer] = counts.get(layer, 0.0) + self_time
    return ranked(counts)


WAITING = (
    "Condition.wait (",
    "Event.wait (",
    "Queue.get (",
    "select (selectors",
    "epoll_pwait",
    "epoll_wait",
    "take_gil",
    "sem_clockwait",
    "PyThread_acquire_lock_timed",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
)
"""A stack with one of these is a thread waiting (for work, a socket, the GIL), not working.
py-spy's own idle detection does not work in this container."""
NATIVE = (
    ("database (SQLite C)", ("(libsqlite3",)),
    ("driver (aiosqlite, asyncmy)", ("cursor.c", "connection.c", "statement.c", "row.c")),
    ("kernel (socket calls)", ("write (libc", "send (libc", "recv", "sendto (", "writev (")),
    ("Python runtime (gc)", ("gc_collect",)),
)


def _native_layer(frame: str) -> str | None:
    for layer, markers in NATIVE:
        if any(marker in frame for marker in markers):
            return layer
    return None


def pyspy_layers(lines: Iterable[str]) -> tuple[list[tuple[str, float]], int, int]:
    """Samples by layer of a py-spy raw profile (``--native`` or not): each working sample
    counts for its topmost frame that names a layer (unnamed C addresses and the
    interpreter's own frames count for the Python frame that called them). Returns the
    layers, the working samples and the waiting ones left out."""
    counts: dict[str, float] = {}
    working = waiting = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        if any(marker in frame for frame in frames for marker in WAITING):
            waiting += count
            continue
        working += count
        layer = OTHER
        for frame in reversed(frames):
            native = _native_layer(frame)
            if native is not None:
                layer = native
                break
            if frame.startswith("0x") or "(libpython" in frame or "(libc" in frame:
                continue
            layer = layer_of(frame)
            break
        counts[layer] = counts.get(layer, 0.0) + count
    return ranked(counts), working, waiting


def _rows(counts: dict[str, int], total: int, indent: str) -> list[str]:
    return [f"| {indent}{k} | {v:,} | {100 * v / total:.1f} % |" for k, v in counts.items() if v]


def served_table(figures: dict[str, Any]) -> str:
    """``served_page.py --split``'s figures as one table: a page's instructions by thread
    and object, the main thread's by layer (its instructions times each layer's share of
    its CPU under cProfile: an estimate), SQLite's by what the statement asks of it, and
    the user and kernel CPU per page."""
    total = figures["instructions_per_page"]
    main = figures["main_thread_by_object_per_page"]
    others = figures["other_threads_by_object_per_page"]
    main_total, others_total = sum(main.values()), sum(others.values())
    lines = ["| where a served page's instructions go | per page | of the page |", "|---|---|---|"]
    lines.append(f"| **whole page (callgrind, all threads)** | **{total:,}** | 100 % |")
    lines.append(
        f"| main thread (event loop, HTTP, app) | {main_total:,} | "
        f"{100 * main_total / total:.1f} % |"
    )
    lines += _rows(main, total, "&nbsp;&nbsp;")
    lines.append(
        f"| main thread by layer (times cProfile's shares) | {main_total:,} | "
        f"{100 * main_total / total:.1f} % |"
    )
    for layer, pct in figures["main_thread_layers_pct"].items():
        share = round(main_total * pct / 100)
        lines.append(
            f"| &nbsp;&nbsp;{layer} ({pct:.1f} % of its CPU) | ~{share:,} | "
            f"{100 * share / total:.1f} % |"
        )
    lines.append(
        f"| other threads (the driver's: SQLite runs here) | {others_total:,} | "
        f"{100 * others_total / total:.1f} % |"
    )
    lines += _rows(others, total, "&nbsp;&nbsp;")
    variants = figures.get("engine_variants")
    if variants:
        shipped, raw, stored = (variants[v]["engine"] for v in ("shipped", "raw", "stored"))
        lines.append(
            f"| SQLite engine, the statement alone (`page_engine.py`) | {shipped:,} | "
            f"{100 * shipped / total:.1f} % |"
        )
        lines.append(
            f"| &nbsp;&nbsp;rows, joins, subqueries (B-tree, VDBE: `raw`) | {raw:,} | "
            f"{100 * raw / total:.1f} % |"
        )
        lines.append(
            f"| &nbsp;&nbsp;writing the JSON (cmschat's SQL: `shipped` less `raw`) | "
            f"{shipped - raw:,} | {100 * (shipped - raw) / total:.1f} % |"
        )
        lines.append(
            f"| experiment: the JSON stored in a column (`stored`) | {stored:,} | "
            f"{100 * stored / total:.1f} % |"
        )
        whole = {v: variants[v]["all"] for v in ("shipped", "raw", "stored")}
        lines.append(
            f"| &nbsp;&nbsp;the statement with libc and `_sqlite3`: shipped / raw / "
            f"stored | {whole['shipped']:,} / {whole['raw']:,} / {whole['stored']:,} | |"
        )
    cpu = [
        (t, figures[f"{t}_user_us_per_page"], figures[f"{t}_system_us_per_page"])
        for t in ("main_thread", "other_threads")
    ]
    user = sum(u for _t, u, _s in cpu)
    system = sum(s for _t, _u, s in cpu)
    lines.append("")
    lines.append("| CPU per page (`/proc`, profiler off) | user | kernel |")
    lines.append("|---|---|---|")
    for name, u, s in cpu:
        lines.append(f"| {name.replace('_', ' ')} | {u:.0f} µs | {s:.0f} µs |")
    lines.append(
        f"| all ({figures['pages_per_s_unprofiled']:,.0f} pages/s on one connection) | "
        f"{user:.0f} µs | {system:.0f} µs ({100 * system / (user + system):.0f} %) |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}:")
        layers, working, waiting = pyspy_layers(Path(name).read_text(errors="replace").splitlines())
        print(f"  {working} working samples ({waiting} waiting left out)")
        for layer, pct in layers:
            print(f"  {pct:5.1f}%  {layer}")
