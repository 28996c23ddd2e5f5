"""A callgrind dump's self instructions by the shared object they ran in, and by thread.

Read from the dump itself (``ob=`` sets the object, a cost line after ``calls=`` is a
call's inclusive cost, not self): the Python interpreter, uvloop/libuv, SQLite, the
MariaDB driver, orjson, libc, ...; the GIL's, mutexes' and conditions' functions apart,
each call counted for its caller: the threads' handoff (the GIL, the interpreter's other
locks) or SQLite's own mutexes. With ``--separate-threads=yes`` a dump is one file per thread
(``<out>.<dump>-<thread>``, thread 01 the main one): ``by_thread`` reads them all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import children

GIL = "threads' handoff: the GIL taken and dropped (take_gil, drop_gil)"
LOCKS = "threads' handoff: the interpreter's other locks (queues, futures' conditions)"
ENGINE_LOCKS = "SQLite's own mutexes (its serialized mode: every API call, malloc)"
_GIL_FUNCTIONS = ("take_gil", "drop_gil")
_HANDOFF_FUNCTIONS = (*_GIL_FUNCTIONS, "pthread_mutex", "pthread_cond", "futex", "lll_lock")
ENGINE = "SQLite engine (libsqlite3)"
INTERPRETER = "Python interpreter (all Python code, builtins)"
LIBC = "libc / loader (malloc, memcpy, syscalls' wrappers)"
OBJECTS = (
    (ENGINE, ("libsqlite3",)),
    ("sqlite3 module (_sqlite3: statements, rows to Python objects)", ("_sqlite3",)),
    ("json module's C part (_json: the access line)", ("_json",)),
    ("MariaDB driver (asyncmy, C parts)", ("asyncmy",)),
    ("event loop (uvloop, libuv)", ("uvloop",)),
    ("orjson", ("orjson",)),
    ("HTTP parser (httptools, llhttp)", ("httptools",)),
    ("greenlet", ("greenlet",)),
    ("SQLAlchemy C extensions", ("sqlalchemy",)),
    (LIBC, ("libc.so", "libc-", "ld-linux")),
    (INTERPRETER, ("libpython", "bin/python")),
)
_NAMED = re.compile(r"\((\d+)\)\s*(.*)")
_PART = re.compile(r"\.(\d+)(?:-(\d+))?$")


def object_of(path: str) -> str:
    """The group of a shared object's path."""
    for name, markers in OBJECTS:
        if any(marker in path for marker in markers):
            return name
    return f"other ({Path(path).name})"


def _handoff(function: str) -> bool:
    return any(part in function for part in _HANDOFF_FUNCTIONS)


def by_object(dump: Path) -> dict[str, int]:
    """Self instructions of one callgrind dump file by shared object; the GIL, mutex and
    condition functions apart, each call counted (inclusive) for the caller's group: the
    GIL's handoff, the interpreter's other locks, SQLite's own mutexes."""
    names: dict[str, str] = {}
    functions: dict[str, str] = {}
    groups: dict[str, int] = {}
    current = "?"
    function = callee = ""
    after_call = False
    with dump.open() as lines:
        for line in lines:
            if line.startswith(("ob=", "cob=")):
                found = _NAMED.match(line.partition("=")[2])
                if found is None:
                    continue
                key, name = found[1], found[2].strip()
                if name:
                    names[key] = name
                if line.startswith("ob="):
                    current = object_of(names.get(key, name))
            elif line.startswith(("fn=", "cfn=")):
                found = _NAMED.match(line.partition("=")[2])
                if found is None:
                    continue
                key, name = found[1], found[2].strip()
                if name:
                    functions[key] = name
                if line.startswith("fn="):
                    function = functions.get(key, name)
                else:
                    callee = functions.get(key, name)
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                if after_call:
                    after_call = False
                    # A lock's cost is its caller's: counted once, where a function that
                    # is not one calls it (its self cost below is then left out).
                    if _handoff(callee) and not _handoff(function):
                        group = _lock_group(callee, current)
                        groups[group] = groups.get(group, 0) + int(parts[1])
                    elif _handoff(function) and not _handoff(callee):
                        # Counted in that inclusive cost and again as the callee's self.
                        group = _lock_group(function, current)
                        groups[group] = groups.get(group, 0) - int(parts[1])
                    continue
                if not _handoff(function):
                    groups[current] = groups.get(current, 0) + int(parts[1])
    return groups


def _lock_group(callee: str, caller_object: str) -> str:
    if any(part in callee for part in _GIL_FUNCTIONS):
        return GIL
    if caller_object == ENGINE:
        return ENGINE_LOCKS
    return LOCKS


def newest_dump(dumps: Path, pid: int) -> list[Path]:
    """The files of the process's last dump (one per thread with ``--separate-threads``),
    the main thread's first."""
    files = list(dumps.glob(f"cg.{pid}.out.*"))
    numbered = [(_PART.search(f.name), f) for f in files]
    parts = [(int(m[1]), int(m[2] or 1), f) for m, f in numbered if m is not None]
    last = max(dump for dump, _thread, _file in parts)
    return [f for _dump, _thread, f in sorted(p for p in parts if p[0] == last)]


def by_thread(files: list[Path]) -> tuple[dict[str, int], dict[str, int]]:
    """Self instructions by object of the main thread and of all the other threads."""
    main = by_object(files[0])
    others: dict[str, int] = {}
    for file in files[1:]:
        for group, count in by_object(file).items():
            others[group] = others.get(group, 0) + count
    return main, others


def total_of_script(script: str, arguments: list[str], *, out: str, src: str | None) -> int:
    """Run the Python ``script`` with ``arguments`` under callgrind, ``src`` (or the
    checkout's ``src/``) on its ``PYTHONPATH``: the whole run's instructions."""
    env = dict(os.environ)
    env["PYTHONPATH"] = src or str(Path(__file__).resolve().parent.parent / "src")
    subprocess.run(  # noqa: S603 - fixed arguments
        [
            shutil.which("valgrind") or "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            script,
            *arguments,
        ],
        check=True,
        env=env,
        capture_output=True,
        preexec_fn=children.with_parent(),
    )
    totals = next(line for line in Path(out).read_text().splitlines() if line.startswith("totals:"))
    return int(totals.split()[1])
