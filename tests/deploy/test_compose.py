"""deploy/compose: the services the deployment needs, wired as the rest of the repo expects.

Without the compose plugin these tests are the parse `docker compose config` would do, plus
what it would not catch: ports, secrets kept out of the file, cmschat settings that exist,
mounts of files that exist, Prometheus scraping both colours.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from cmschat.settings import Settings
from tests.deploy.compose import (
    COMPOSE_DIR,
    DUMMY_RECIPIENT,
    REPO,
    SECRETS_DIR,
    MissingVariable,
    compose_command,
    duration_seconds,
    example_env,
    host_path,
    is_bind,
    load,
    mounts,
    referenced_variables,
    secret_targets,
)
from tests.observability.tools import run_tool

COLOURS = ("cmschat-blue", "cmschat-green")
CORE = {"nginx", *COLOURS, "mariadb", "redis", "prometheus", "alertmanager", "grafana"}
LOG_STACK = {"elasticsearch", "elasticsearch-template", "fluent-bit"}
# Host paths outside the repository that a service may read (read-only), and who.
HOST_PATHS = {"/": "node-exporter", "/var/lib/docker/containers": "fluent-bit"}
# Built beside this part of issue 17: checked once it exists. Remove each name when it lands.
LANDING = {REPO / "deploy" / "nginx" / "cmschat.conf"}
SENSITIVE = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/compose with make-secrets.sh run in it."""
    if shutil.which("openssl") is None:
        pytest.skip("make-secrets.sh needs openssl")
    # The copy sits where relative paths such as ../nginx and ../../web still resolve.
    root = tmp_path_factory.mktemp("checkout")
    (root / "deploy").mkdir()
    (root / "web").symlink_to(REPO / "web")
    for sibling in (REPO / "deploy").iterdir():
        if sibling.name != "compose":
            (root / "deploy" / sibling.name).symlink_to(sibling)
    copy = root / "deploy" / "compose"
    shutil.copytree(COMPOSE_DIR, copy, ignore=shutil.ignore_patterns(".env"))
    for old in (copy / "secrets").iterdir():  # never an operator's real secrets
        if old.name not in {"README.md", ".gitignore"}:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    result = subprocess.run(  # noqa: S603 - our script, fixed arguments
        [str(copy / "make-secrets.sh"), "chat.example.com"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Without age-keygen the script says so and exits 1, having made everything else.
    age = shutil.which("age-keygen") is not None
    assert result.returncode == (0 if age else 1), result.stdout + result.stderr
    if not age:
        (copy / "secrets" / "backup-identity.txt").write_text("AGE-SECRET-KEY-1TEST\n")
    return copy


def test_every_service_of_the_deployment_is_there(services: dict[str, Any]) -> None:
    assert CORE | {"node-exporter"} | LOG_STACK <= set(services)


def test_only_nginx_publishes_ports_and_only_80_and_443(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("network_mode") not in ("host",), name
        if name != "nginx":
            assert "ports" not in service, f"{name} publishes ports"
    published = {str(port).split(":", 1)[0] for port in services["nginx"]["ports"]}
    targets = {str(port).rsplit(":", 1)[-1] for port in services["nginx"]["ports"]}
    assert published == targets == {"80", "443"}


def test_database_and_redis_are_only_on_the_internal_backend_network(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("mariadb", "redis"):
        assert services[name]["networks"] == ["backend"], name
    assert "backend" not in services["nginx"]["networks"]
    for colour in COLOURS:
        assert {"edge", "backend", "monitoring"} <= set(services[colour]["networks"])


@pytest.mark.parametrize("colour", ["blue", "green"])
def test_bind_mounts_are_read_only_files_of_the_repository(colour: str) -> None:
    services = load(CMSCHAT_ACTIVE_COLOUR=colour)["services"]
    named = set(load()["volumes"])
    for name, service in services.items():
        for source, _, options in mounts(service):
            if not is_bind(source):
                assert source in named, f"{name}: volume {source} not declared"
                continue
            assert "ro" in options, f"{name}: {source} mounted writable"
            if source.startswith("/"):
                assert HOST_PATHS.get(source) == name, f"{name} mounts host path {source}"
                continue
            path = host_path(source)
            if path.is_relative_to(SECRETS_DIR) or (path in LANDING and not path.exists()):
                continue  # made by make-secrets.sh, never committed; or not landed yet
            assert path.is_relative_to(REPO) and path.exists(), f"{name}: no {source}"


def test_nginx_upstreams_name_the_colours(services: dict[str, Any]) -> None:
    for colour in COLOURS:
        text = (COMPOSE_DIR / "nginx" / f"upstream-{colour.split('-')[1]}.conf").read_text()
        assert re.search(r"upstream cmschat_app \{[^}]*server " + colour + r":8000;", text)
    targets = {target for _, target, _ in mounts(services["nginx"])}
    assert {
        "/etc/nginx/conf.d/cmschat.conf",
        "/etc/nginx/cmschat/upstream.conf",
        "/etc/nginx/cmschat/tls",
        "/srv/cmschat/web",
    } <= targets


def test_secrets_come_from_files_in_the_secrets_directory(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = compose["secrets"]
    used = set()
    for name, service in services.items():
        for secret in secret_targets(service):
            assert secret in declared, f"{name} uses undeclared secret {secret}"
            used.add(secret)
    assert used == set(declared), "declared but unused secrets"
    for secret, spec in declared.items():
        assert set(spec) == {"file"}, secret
        assert host_path(spec["file"]).is_relative_to(SECRETS_DIR), secret


def test_no_secret_value_is_written_in_the_environment(services: dict[str, Any]) -> None:
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        targets = set(secret_targets(service).values())
        for variable, value in environment.items():
            assert not re.search(r"://[^/\s:@]*:[^/\s@]+@", str(value)), f"{name}: {variable}"
            if SENSITIVE.search(variable):
                assert variable.endswith("_FILE"), f"{name}: {variable} holds a secret"
                assert value in targets, f"{name}: {variable} is not one of its secrets"
    for variable, value in example_env().items():
        assert not SENSITIVE.search(variable) or not value, f".env.example: {variable}"


def test_make_secrets_writes_every_declared_secret_readable_in_a_private_directory(
    compose: dict[str, Any], made_secrets: Path
) -> None:
    secrets_dir = made_secrets / "secrets"
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    for secret, spec in compose["secrets"].items():
        path = made_secrets / spec["file"]
        assert path.is_file(), secret
        # Compose mounts the file as it is: the services' own users must be able to read it.
        assert path.stat().st_mode & 0o777 == 0o444, secret
    for name in ("fullchain.pem", "privkey.pem"):
        assert (secrets_dir / "tls" / name).is_file()
    password = (secrets_dir / "mariadb_password").read_text().strip()
    assert f"cmschat:{password}@mariadb:3306/cmschat" in (secrets_dir / "cmschat.env").read_text()


def test_mariadb_logs_binary_row_events_with_passwords_from_files(
    services: dict[str, Any],
) -> None:
    mariadb = services["mariadb"]
    command = mariadb["command"]
    assert any(arg.startswith("--log-bin") for arg in command)
    assert "--binlog-format=ROW" in command
    assert any(re.fullmatch(r"--server-id=[1-9]\d*", arg) for arg in command)
    assert "--character-set-server=utf8mb4" in command
    assert {"MARIADB_ROOT_PASSWORD_FILE", "MARIADB_PASSWORD_FILE"} <= set(mariadb["environment"])
    assert "healthcheck" in mariadb and "healthcheck" in services["redis"]
    for source, target, _ in mounts(mariadb):
        if target == "/docker-entrypoint-initdb.d":
            assert any(host_path(source).glob("*.sql"))


def test_the_colours_differ_only_in_image_and_outlast_cmschats_drain(
    services: dict[str, Any],
) -> None:
    blue, green = (dict(services[colour]) for colour in COLOURS)
    assert (blue.pop("image"), green.pop("image")) == ("cmschat:0.1.0", "cmschat:0.1.0")
    assert {blue.pop("hostname"), green.pop("hostname")} == set(COLOURS)
    assert blue == green
    # Both see the same attachments: one data volume (or S3), never one per colour.
    assert ("cmschat-data", "/var/lib/cmschat", []) in mounts(blue)
    assert blue["environment"]["CMSCHAT_DATA_DIR"] == "/var/lib/cmschat"
    # Drain (the grace) plus the supervisor's 5 s for its workers, before Docker's SIGKILL.
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert duration_seconds(blue["stop_grace_period"]) > grace + 5
    assert blue.get("healthcheck", {}).get("disable") is not True
    for dependency in ("mariadb", "redis"):
        assert blue["depends_on"][dependency]["condition"] == "service_healthy"
    raw = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["services"]
    assert raw["cmschat-blue"]["image"].startswith("${CMSCHAT_IMAGE_BLUE")
    assert raw["cmschat-green"]["image"].startswith("${CMSCHAT_IMAGE_GREEN")


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
    assert fluent_bit["pipeline"]["outputs"][0]["host"] in services
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


def test_env_example_sets_every_variable_compose_reads() -> None:
    assert referenced_variables() - set(example_env()) == set()
    with pytest.raises(MissingVariable, match="CMSCHAT_BACKUP_RECIPIENTS"):
        load(CMSCHAT_BACKUP_RECIPIENTS="")


def test_make_secrets_is_a_valid_shell_script() -> None:
    result = subprocess.run(  # noqa: S603 - fixed arguments
        ["sh", "-n", str(COMPOSE_DIR / "make-secrets.sh")],  # noqa: S607 - POSIX sh
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert os.access(COMPOSE_DIR / "make-secrets.sh", os.X_OK)


def test_docker_compose_config_accepts_it(made_secrets: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose 2.20 or newer here (the checks above stand in for it)")
    env = example_env() | {"CMSCHAT_BACKUP_RECIPIENTS": DUMMY_RECIPIENT}
    (made_secrets / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for profile in ([], ["--profile", "logs"]):
        result = subprocess.run(  # noqa: S603 - fixed arguments
            [*command, *profile, "config", "--quiet"],
            cwd=made_secrets,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
