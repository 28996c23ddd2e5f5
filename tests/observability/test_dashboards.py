"""Grafana provisioning: every panel's PromQL passes promtool, every panel reads the
provisioned datasource, and the dashboards cover what operators asked for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.observability.tools import MONITORING, run_tool

GRAFANA = MONITORING / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def panels() -> list[tuple[str, dict[str, Any]]]:
    """(dashboard file, panel) for every panel."""
    return [
        (path.name, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    ]


def test_every_panel_expression_passes_promtool(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{n}_{target['refId']}", "expr": target["expr"]}
        for n, (_, panel) in enumerate(panels())
        for target in panel["targets"]
    ]
    assert len(rules) >= 30
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = run_tool("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboards_are_provisioned_from_one_datasource() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    for name, panel in panels():
        assert panel["datasource"]["uid"] in uids, (name, panel["title"])
        assert panel["targets"], (name, panel["title"])
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
    boards = [json.loads(path.read_text()) for path in DASHBOARDS]
    assert len({board["uid"] for board in boards}) == len(boards)
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "cmschat.yml").read_text()
    )["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_the_dashboards_cover_service_realtime_database_backups_and_host() -> None:
    text = {path.stem: path.read_text() for path in DASHBOARDS}
    expected = {
        "cmschat-service": ["cmschat_http_requests_total", "cmschat_http_request_duration"],
        "cmschat-realtime": ["cmschat_websocket_connections_open", "cmschat_delivery_latency"],
        "cmschat-database": [
            "cmschat_db_query_duration_seconds",
            "cmschat_db_slow_queries",
            "cmschat_database_conflicts_total",
        ],
        "cmschat-backups-retention": [
            "cmschat_backup_last_success_timestamp_seconds",
            "cmschat_retention_runs_total",
        ],
        "cmschat-host": ["node_cpu_seconds_total", "node_filesystem_avail_bytes"],
    }
    for board, metrics in expected.items():
        for metric in metrics:
            assert metric in text[board], (board, metric)
