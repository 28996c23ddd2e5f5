"""Child processes that die with their parent: every process the bench tools and the test
suite start goes through ``with_parent`` (``preexec_fn``) or ``die_with_parent``.

A killed pytest or bench (a CI timeout's SIGKILL or SIGTERM) would otherwise leave its
``cmschat serve``, mariadbd or load generators running, holding ports and databases. On
Linux the kernel sends the child SIGKILL when its parent goes (``PR_SET_PDEATHSIG``); where
there is no ``prctl`` nothing changes.

The signal follows the *thread* that started the child: start a child from a thread that
lives as long as the child should (the main thread, an event loop's thread).

Standard library only: the suite imports it as ``bench.children``, the bench tools (run as
scripts from bench/) as ``children``, whichever ``src/`` they run against.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 - only Linux's libc has it
    except (OSError, AttributeError):
        return None
    return libc


# Loaded in the parent: between fork and exec the child may only call what is loaded.
_LIBC = _libc()


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` (its parent's pid, read before
    the fork) dies; exit at once if it already has."""
    if _LIBC is None:
        return
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess`` and ``asyncio.create_subprocess_exec``: the
    child dies with this process."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)
