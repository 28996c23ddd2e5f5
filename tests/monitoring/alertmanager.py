"""A real Alertmanager (Debian's, installed by scripts/monitoring) for a test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests import support
from tests.observability.test_live_prometheus import background, wait_for
from tests.processes import free_port

CONFIG = """
route:
  receiver: nobody
receivers:
  - name: nobody
"""


@contextmanager
def alertmanager(directory: Path) -> Iterator[str]:
    """Alertmanager on a spare loopback port, ready; yields its base URL."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        support.service_missing("Alertmanager", FileNotFoundError("run scripts/monitoring"))
    assert binary is not None
    (directory / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"--config.file={directory / 'alertmanager.yml'}",
        f"--storage.path={directory / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # alone: no gossip port
    ]
    log = directory / "alertmanager.log"
    with background(args, log):
        wait_for(lambda: httpx.get(f"{base}/-/ready").is_success, "Alertmanager ready", log)
        yield base


def fire(base: str, alerts: list[dict[str, Any]], directory: Path) -> None:
    """Post alerts as Prometheus would, and wait until Alertmanager lists them all."""
    posted = httpx.post(f"{base}/api/v2/alerts", json=alerts)
    assert posted.is_success, posted.text
    wait_for(
        lambda: len(httpx.get(f"{base}/api/v2/alerts").json()) == len(alerts),
        "Alertmanager took the alerts",
        directory / "alertmanager.log",
    )
