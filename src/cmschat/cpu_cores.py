"""How many cores this process may use, for ``--workers auto``.

``os.cpu_count()`` is the machine's. A container started with ``--cpus 2`` on a 64-core
host, or a systemd service with ``CPUQuota=200%``, may use two: 64 workers there would
share two cores' time, each with its own pools of database connections, and be throttled.
So: the cores the process is pinned to (``taskset``, a cpuset), capped by the tightest CPU
quota of its control group and those above it (cgroup v2 ``cpu.max``), rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
OWN_CGROUP = Path("/proc/self/cgroup")


def usable_cores(root: Path = CGROUP_ROOT, own: Path = OWN_CGROUP) -> int:
    """At least one."""
    cores = len(os.sched_getaffinity(0))
    quota = _tightest_quota(root, own)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _tightest_quota(root: Path, own: Path) -> float | None:
    """Cores' worth of CPU time allowed to this process's control group and those above it;
    None when no quota is set or none can be read."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float | None] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:  # cgroup v2; under /unified on a host that mounts both
            v2 = root if (root / "cgroup.controllers").exists() else root / "unified"
            quotas += [_v2_quota(group) for group in _up(v2, path)]
        elif "cpu" in controllers.split(","):
            quotas += [_v1_quota(group) for group in _up(root / "cpu", path)]
    return min((quota for quota in quotas if quota is not None), default=None)


def _up(base: Path, path: str) -> list[Path]:
    """The group's directory and those above it, up to ``base``."""
    group = base / path.lstrip("/")
    return [group, *(parent for parent in group.parents if parent.is_relative_to(base))]


def _v2_quota(group: Path) -> float | None:
    """``cpu.max`` holds "QUOTA PERIOD" in microseconds, or "max PERIOD" for no limit."""
    try:
        quota, period = (group / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(group: Path) -> float | None:
    """``cpu.cfs_quota_us`` is -1 for no limit."""
    try:
        quota = int((group / "cpu.cfs_quota_us").read_text())
        period = int((group / "cpu.cfs_period_us").read_text())
        return None if quota < 0 else quota / period
    except (OSError, ValueError):
        return None
