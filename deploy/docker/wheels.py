"""Make the wheels the image installs from: cmschat and every dependency, for CPython 3.11.

Usage: python3 deploy/docker/wheels.py DIR   (from the repository root; DIR is emptied)

Run by deploy/docker/build.sh with an interpreter that has pip. pip resolves dependencies
for the interpreter running it, so that must be CPython 3.11 on the image's architecture,
as the image's Python is; and since the image's patch level may be older or newer than this
one's (Debian bookworm ships 3.11.2, the public slim image a recent 3.11), requirements that
only some 3.11 patch levels need (redis needs async-timeout before 3.11.3) are added too.
pip installs only what the image's own Python needs from the directory.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

PATCH_LEVELS = range(30)
"""3.11.0 to 3.11.29: every patch level the image's Python may have."""


def pip_wheel(directory: Path, *requirements: str) -> None:
    """Build or fetch wheels of ``requirements`` and their dependencies into ``directory``."""
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(directory)]
    subprocess.run([*command, *requirements], check=True)  # noqa: S603 - pip, our arguments


def needed_by_other_patch_levels(directory: Path) -> set[str]:
    """Requirements of the wheels in ``directory`` that this Python skips but another 3.11
    patch level would install (extras left aside: their requirements are not installed)."""
    here = default_environment()
    wanted = set()
    for wheel in directory.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = Parser().parsestr(archive.read(name).decode())
        for line in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or marker.evaluate({**here, "extra": ""}):
                continue
            for patch in PATCH_LEVELS:
                other = {
                    **here,
                    "extra": "",
                    "python_version": "3.11",
                    "python_full_version": f"3.11.{patch}",
                }
                if marker.evaluate(other):
                    requirement.marker = None
                    wanted.add(str(requirement))
                    break
    return wanted


def main() -> None:
    """Empty DIR, then fill it with wheels for any CPython 3.11 on this architecture."""
    if len(sys.argv) != 2:
        sys.exit("usage: python3 deploy/docker/wheels.py DIR")
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        sys.exit(
            f"wheels.py: {sys.executable} is {platform.python_implementation()} "
            f"{platform.python_version()}; the image runs CPython 3.11, so its wheels must be "
            "made by one (set PYTHON for build.sh)"
        )
    directory = Path(sys.argv[1])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    pip_wheel(directory, ".")
    done: set[str] = set()
    while extra := needed_by_other_patch_levels(directory) - done:
        pip_wheel(directory, *sorted(extra))
        done |= extra
    print(f"wheels.py: {len(list(directory.glob('*.whl')))} wheels in {directory}")


if __name__ == "__main__":
    main()
