"""Firing alerts come from a real Alertmanager (Debian's, installed by scripts/monitoring)."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cmschat.context import AppContext
from tests import support
from tests.observability.test_live_prometheus import background, wait_for
from tests.processes import free_port
from tests.support import NamedUser

pytestmark = pytest.mark.slow

CONFIG = """
route:
  receiver: nobody
receivers:
  - name: nobody
"""


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: this tests the Alertmanager side; the queries have their own tests."""
    return support.copy_sqlite(sqlite_template, tmp_path / "alerts.db")


async def test_firing_alerts_from_a_real_alertmanager(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        support.service_missing("Alertmanager", FileNotFoundError("run scripts/monitoring"))
    assert binary is not None
    (tmp_path / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    log = tmp_path / "alertmanager.log"
    with background(args, log):
        wait_for(lambda: httpx.get(f"{base}/-/ready").is_success, "Alertmanager ready", log)
        started = datetime.now(UTC) - timedelta(minutes=5)
        alerts = [
            {
                "labels": {"alertname": "CmschatDown", "severity": "critical", "job": "cmschat"},
                "annotations": {"summary": "no cmschat instance answers"},
                "startsAt": started.isoformat(),
            },
            {
                "labels": {"alertname": "CmschatSlowRequests", "severity": "warning"},
                "annotations": {"summary": "p95 above 1 s"},
            },
        ]
        async with httpx.AsyncClient() as outside:
            posted = await outside.post(f"{base}/api/v2/alerts", json=alerts)
        assert posted.is_success, posted.text
        context.settings.monitoring.alertmanager_url = base
        headers = await admin.login(client)

        async def firing() -> dict[str, object]:
            response = await client.get("/api/v1/admin/monitoring", headers=headers)
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()["alerts"]
            return body

        # Alertmanager takes posted alerts in asynchronously: ask until both are there.
        deadline = time.monotonic() + 30
        body = await firing()
        while body.get("total") != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # polling a condition, with a deadline
            body = await firing()
    assert body["state"] == "ok"
    items = body["items"]
    assert isinstance(items, list)
    assert [a["name"] for a in items] == ["CmschatDown", "CmschatSlowRequests"]
    assert items[0]["severity"] == "critical"
    assert items[0]["summary"] == "no cmschat instance answers"
    assert abs(datetime.fromisoformat(items[0]["since"]) - started) < timedelta(seconds=1)
