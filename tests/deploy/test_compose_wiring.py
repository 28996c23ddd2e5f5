"""deploy/compose: cmschat's settings are real and accepted; Prometheus, Alertmanager, Grafana
and Fluent Bit get the shipped configurations and reach the services by their compose names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from cmschat.settings import Settings
from tests.deploy.compose import (
    COLOURS,
    COMPOSE_DIR,
    DUMMY_RECIPIENT,
    LOG_STACK,
    REPO,
    host_path,
    mounts,
    secret_targets,
)
from tests.observability.tools import run_tool


def setting_exists(variable: str) -> bool:
    """True when CMSCHAT_X or CMSCHAT_X__Y names a field of cmschat's Settings."""
    first, *rest = variable.removeprefix("CMSCHAT_").lower().split("__")
    field = Settings.model_fields.get(first)
    if field is None or len(rest) > 1:
        return False
    if not rest:
        return True
    model = field.annotation
    return (
        isinstance(model, type) and issubclass(model, BaseModel) and rest[0] in model.model_fields
    )


def test_every_cmschat_variable_is_a_real_setting(
    services: dict[str, Any], made_secrets: Path
) -> None:
    env_file = (made_secrets / "secrets" / "cmschat.env").read_text()
    names = set(services["cmschat-blue"]["environment"])
    names |= {line.split("=", 1)[0] for line in env_file.splitlines() if "=" in line}
    cmschat = {name for name in names if name.startswith("CMSCHAT_")}
    assert cmschat, "no CMSCHAT_ variables"
    assert [name for name in sorted(cmschat) if not setting_exists(name)] == []


def test_cmschat_accepts_the_settings_it_is_given(
    services: dict[str, Any], made_secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CMSCHAT_"):
            monkeypatch.delenv(name)
    for name, value in services["cmschat-blue"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = Settings(_env_file=made_secrets / "secrets" / "cmschat.env")
    assert settings.database_url.startswith("mysql+asyncmy://cmschat:")
    assert settings.redis_url and settings.redis_url.startswith("redis://:")
    assert settings.metrics.token is not None and settings.secret_key is not None
    assert settings.backup.recipients == [DUMMY_RECIPIENT]
    assert settings.trusted_proxies == [services["nginx"]["networks"]["edge"]["ipv4_address"]]


def test_the_logs_profile_holds_the_log_stack_and_nothing_else(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("profiles") == (["logs"] if name in LOG_STACK else None), name
    fluent_bit = yaml.safe_load((COMPOSE_DIR / "logging" / "fluent-bit.yaml").read_text())
    greps = dict(
        f["regex"].split(" ", 1) for f in fluent_bit["pipeline"]["filters"] if f["name"] == "grep"
    )
    pattern = greps["$attrs['com.docker.compose.service']"]
    assert all(re.search(pattern, colour) for colour in COLOURS)
    # Only the log (stderr): stdout may carry a one-time password printed for a person.
    assert greps["stream"] == "^stderr$"
    parsers = yaml.safe_load((REPO / "deploy" / "logging" / "parsers.yaml").read_text())
    shipped = {parser["name"] for parser in parsers["parsers"]}
    assert {f.get("parser") for f in fluent_bit["pipeline"]["filters"]} - {None} <= shipped
    # The shipped output, Elasticsearch found by its service name.
    output = fluent_bit["pipeline"]["outputs"][0]
    shipped_bit = yaml.safe_load((REPO / "deploy" / "logging" / "fluent-bit.yaml").read_text())
    shipped_output = shipped_bit["pipeline"]["outputs"][0]
    assert output | {"match": None} == shipped_output | {"match": None}
    assert output["host"] in services
    for colour in COLOURS:
        assert services[colour]["logging"]["options"]["labels"] == "com.docker.compose.service"


def mounted_file(service: dict[str, Any], target: str) -> Path:
    """The repository file a service sees at `target`."""
    return next(host_path(source) for source, to, _ in mounts(service) if to == target)


def test_prometheus_scrapes_both_colours_with_the_shipped_rules(
    services: dict[str, Any], tmp_path: Path
) -> None:
    prometheus = services["prometheus"]
    path = mounted_file(prometheus, "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    names = {name for sd in jobs["cmschat"].get("dns_sd_configs", []) for name in sd["names"]}
    names |= {
        t.split(":")[0] for sc in jobs["cmschat"].get("static_configs", []) for t in sc["targets"]
    }
    assert set(COLOURS) <= names <= set(services)
    assert jobs["node"]["static_configs"][0]["targets"] == ["node-exporter:9100"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    token_file = jobs["cmschat"]["authorization"]["credentials_file"]
    assert token_file in secret_targets(prometheus).values()
    rules = mounted_file(prometheus, "/etc/prometheus/rules")
    assert rules == REPO / "deploy" / "monitoring" / "rules"
    assert config["rule_files"] == ["rules/*.yml"] and any(rules.glob("*.yml"))
    # promtool reads it as Prometheus would (names need not resolve for the check).
    token = tmp_path / "token"
    token.write_text("x" * 40)
    text = path.read_text().replace(token_file, str(token)).replace("rules/*.yml", f"{rules}/*.yml")
    (tmp_path / "prometheus.yml").write_text(text)
    result = run_tool("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_and_grafana_get_the_shipped_configs_and_their_secrets(
    services: dict[str, Any],
) -> None:
    alertmanager = services["alertmanager"]
    config_path = mounted_file(alertmanager, "/etc/alertmanager/alertmanager.yml")
    assert config_path == REPO / "deploy" / "monitoring" / "alertmanager.yml"
    files = {
        v
        for k, v in yaml.safe_load(config_path.read_text())["global"].items()
        if k.endswith("_file")
    }
    assert files and files <= set(secret_targets(alertmanager).values())
    grafana = services["grafana"]
    provisioning = yaml.safe_load(
        (mounted_file(grafana, "/etc/grafana/provisioning/dashboards") / "cmschat.yml").read_text()
    )
    dashboards = mounted_file(grafana, provisioning["providers"][0]["options"]["path"])
    assert any(dashboards.glob("*.json"))
    sources = mounted_file(grafana, "/etc/grafana/provisioning/datasources")
    source = yaml.safe_load((sources / "prometheus.yml").read_text())["datasources"][0]
    assert (source["uid"], source["url"]) == ("prometheus", "http://prometheus:9090")
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")
