"""Datadog and CloudWatch agent configurations: parsed and checked against cmschat's
endpoint, token handling, log files and metric names (the agents are not installed here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from cmschat.observability import instruments
from tests.observability.tools import MONITORING, run_tool

LOG_FILES = "/var/log/cmschat/*.json"
METRICS_PATH = "/metrics"


SUFFIXES = {"counter": ("_total",), "histogram": ("_sum", "_count", "_bucket"), "gauge": ("",)}


def exported_samples() -> set[str]:
    """The sample names cmschat exports (counters with _total, histograms' parts)."""
    names = set()
    for value in vars(instruments).values():
        name, kind = getattr(value, "_name", None), getattr(value, "_type", None)
        if isinstance(name, str) and name.startswith("cmschat_") and kind in SUFFIXES:
            names |= {name + suffix for suffix in SUFFIXES[kind]}
    return names


def test_datadog_scrapes_metrics_with_the_token_from_a_file_and_collects_the_logs() -> None:
    datadog = MONITORING / "datadog"
    [instance] = yaml.safe_load((datadog / "conf.d/openmetrics.d/conf.yaml").read_text())[
        "instances"
    ]
    assert instance["openmetrics_endpoint"].endswith(METRICS_PATH)
    assert instance["auth_token"]["reader"]["type"] == "file"
    assert instance["auth_token"]["writer"]["value"] == "Bearer <TOKEN>"
    assert any(re.fullmatch(pattern, "cmschat_http_requests") for pattern in instance["metrics"])
    [logs] = yaml.safe_load((datadog / "conf.d/cmschat.d/conf.yaml").read_text())["logs"]
    assert (logs["type"], logs["path"], logs["service"]) == ("file", LOG_FILES, "cmschat")
    agent = yaml.safe_load((datadog / "datadog.yaml").read_text())
    assert agent["logs_enabled"] is True
    assert agent["otlp_config"]["receiver"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_cloudwatch_agent_collects_logs_and_selected_metrics_we_export(tmp_path: Path) -> None:
    cloudwatch = MONITORING / "cloudwatch"
    config = json.loads((cloudwatch / "amazon-cloudwatch-agent.json").read_text())
    [files] = config["logs"]["logs_collected"]["files"]["collect_list"]
    assert files["file_path"] == LOG_FILES
    prometheus = config["logs"]["logs_collected"]["prometheus"]
    assert prometheus["prometheus_config_path"].endswith("/prometheus.yaml")
    [declaration] = prometheus["emf_processor"]["metric_declaration"]
    samples = exported_samples() | {
        "cmschat_backup_last_success_timestamp_seconds",  # the backup feature's
        "cmschat_backup_drill_success",
    }
    for selector in declaration["metric_selectors"]:
        assert any(re.search(selector, name) for name in samples), selector
    # The scrape file is a standard Prometheus configuration: promtool checks it.
    token = tmp_path / "token"
    token.write_text("t" * 40)
    scrape = (cloudwatch / "prometheus.yaml").read_text()
    scrape = scrape.replace(
        "/opt/aws/amazon-cloudwatch-agent/etc/cmschat-metrics-token", str(token)
    )
    (tmp_path / "prometheus.yaml").write_text(scrape)
    result = run_tool("promtool", "check", "config", str(tmp_path / "prometheus.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    [job] = yaml.safe_load(scrape)["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH and job["authorization"]["type"] == "Bearer"
