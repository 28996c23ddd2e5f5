"""Firing alerts come from a real Alertmanager (Debian's, installed by scripts/monitoring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cmschat.context import AppContext
from tests import support
from tests.monitoring.alertmanager import alertmanager, fire
from tests.support import NamedUser

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: this tests the Alertmanager side; the queries have their own tests."""
    return support.copy_sqlite(sqlite_template, tmp_path / "alerts.db")


async def test_firing_alerts_from_a_real_alertmanager(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, tmp_path: Path
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=5)
    with alertmanager(tmp_path) as base:
        fire(
            base,
            [
                {
                    "labels": {"alertname": "CmschatSlowRequests", "severity": "warning"},
                    "annotations": {"summary": "p95 above 1 s"},
                },
                {
                    "labels": {"alertname": "CmschatDown", "severity": "critical"},
                    "annotations": {"summary": "no cmschat instance answers"},
                    "startsAt": started.isoformat(),
                },
            ],
            tmp_path,
        )
        context.settings.monitoring.alertmanager_url = base
        response = await client.get("/api/v1/admin/monitoring", headers=await admin.login(client))
    assert response.status_code == 200, response.text
    body = response.json()["alerts"]
    assert body["state"] == "ok"
    assert body["total"] == 2
    items = body["items"]
    # The most severe first.
    assert [a["name"] for a in items] == ["CmschatDown", "CmschatSlowRequests"]
    assert items[0]["severity"] == "critical"
    assert items[0]["summary"] == "no cmschat instance answers"
    assert abs(datetime.fromisoformat(items[0]["since"]) - started) < timedelta(seconds=1)
