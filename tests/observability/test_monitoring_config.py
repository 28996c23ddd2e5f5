"""The shipped Prometheus and Alertmanager configuration passes the tools' own checks, and
every alert rule has a unit test (promtool test rules) that passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.observability.tools import MONITORING, run_tool

RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
ALERT_TESTS = sorted((MONITORING / "tests").glob("*-test.yml"))


def alert_names() -> set[str]:
    """Every alert the shipped rules define."""
    return {
        rule["alert"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    # The token file is a secret that exists only on the server: stand one in.
    token = tmp_path / "cmschat-metrics-token"
    token.write_text("x" * 40)
    config = (MONITORING / "prometheus.yml").read_text()
    config = config.replace("/etc/prometheus/secrets/cmschat-metrics-token", str(token))
    config = config.replace("rules/*.yml", str(MONITORING / "rules" / "*.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    result = run_tool("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_alert_rules_are_valid() -> None:
    result = run_tool("promtool", "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_is_valid_and_keeps_secrets_in_files() -> None:
    path = MONITORING / "alertmanager.yml"
    result = run_tool("amtool", "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    assert config["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    assert config["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
    text = path.read_text()
    assert "hooks.slack.com" not in text and "smtp_auth_password:" not in text
    receivers = {r["name"]: r for r in config["receivers"]}
    critical = next(r for r in config["route"]["routes"] if 'severity="critical"' in r["matchers"])
    assert {"slack_configs", "email_configs"} <= set(receivers[critical["receiver"]])


@pytest.mark.slow
def test_every_alert_has_a_passing_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in ALERT_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == alert_names()
    result = run_tool("promtool", "test", "rules", *map(str, ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(ALERT_TESTS)
