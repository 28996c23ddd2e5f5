"""``--workers auto`` counts the cores a container or service may use, not the host's."""

from __future__ import annotations

import os
from pathlib import Path

from cmschat.cpu_cores import usable_cores

PINNED = len(os.sched_getaffinity(0))


def _tree(root: Path, files: dict[str, str], own: str) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    (root / "self-cgroup").write_text(own)
    return root / "self-cgroup"


def test_a_cgroup_v2_quota_caps_the_cores_rounded_up(tmp_path: Path) -> None:
    own = _tree(
        tmp_path,
        {"cgroup.controllers": "cpu", "docker/abc/cpu.max": "50000 100000\n"},
        "0::/docker/abc\n",
    )
    assert usable_cores(tmp_path, own) == 1  # half a core's time: one worker


def test_the_tightest_quota_above_the_group_counts(tmp_path: Path) -> None:
    own = _tree(
        tmp_path,
        {
            "cgroup.controllers": "cpu",
            "system.slice/cpu.max": "80000 100000\n",
            "system.slice/cmschat.service/cpu.max": "max 100000\n",
        },
        "0::/system.slice/cmschat.service\n",
    )
    assert usable_cores(tmp_path, own) == 1


def test_a_cgroup_v1_quota_on_a_hybrid_host(tmp_path: Path) -> None:
    own = _tree(
        tmp_path,
        {
            "cpu/docker/abc/cpu.cfs_quota_us": "100000\n",
            "cpu/docker/abc/cpu.cfs_period_us": "100000\n",
            "unified/docker/abc/cpu.max": "max 100000\n",
        },
        "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
    )
    assert usable_cores(tmp_path, own) == 1


def test_no_quota_or_nothing_to_read_leaves_the_pinned_cores(tmp_path: Path) -> None:
    unlimited = _tree(
        tmp_path,
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
        "1:cpu:/\n0::/\n",
    )
    assert usable_cores(tmp_path, unlimited) == PINNED
    assert usable_cores(tmp_path / "absent", tmp_path / "absent" / "cgroup") == PINNED
    assert usable_cores() >= 1  # this machine's own files, whatever they say
