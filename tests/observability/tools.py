"""The Prometheus tools from Debian's packages (installed by scripts/monitoring)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests import support
from tests.commands import run

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
TOOL_PATHS = {
    "promtool": "promtool",
    "amtool": "amtool",
    "prometheus": "prometheus",
    "node_exporter": "prometheus-node-exporter",
}


def tool(name: str) -> str:
    """The path of a tool; skipped locally, failed in CI, when it is not installed."""
    found = shutil.which(TOOL_PATHS[name])
    if found is None:
        support.service_missing(name, FileNotFoundError("install it with scripts/monitoring"))
    assert found is not None
    return found


def run_tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion and return its result (output captured)."""
    return run([tool(name), *args], timeout=120, cwd=cwd)
