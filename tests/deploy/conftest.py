"""Fixtures of the deploy tests: compose.yaml as loaded, and a copy with its secrets made."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.commands import run
from tests.deploy.compose import COMPOSE_DIR, REPO, load
from tests.support import required_file_missing


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="session")
def made_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/compose with make-secrets.sh run in it."""
    if shutil.which("openssl") is None:
        required_file_missing(Path("openssl"), "make-secrets.sh needs openssl")
    # The copy sits where relative paths such as ../nginx and ../../web still resolve.
    root = tmp_path_factory.mktemp("checkout")
    (root / "deploy").mkdir()
    (root / "web").symlink_to(REPO / "web")
    for sibling in (REPO / "deploy").iterdir():
        if sibling.name != "compose":
            (root / "deploy" / sibling.name).symlink_to(sibling)
    copy = root / "deploy" / "compose"
    # Neither an operator's .env nor the colour their nginx is on (nginx/active.conf*), nor
    # the web client it serves (web-root).
    ignore = shutil.ignore_patterns(".env", "active.conf", "active.conf.previous", "web-root")
    shutil.copytree(COMPOSE_DIR, copy, ignore=ignore)
    for old in (copy / "secrets").iterdir():  # never an operator's real secrets
        if old.name not in {"README.md", ".gitignore"}:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    result = run([str(copy / "make-secrets.sh"), "chat.example.com"], timeout=120)
    # Without age-keygen the script says so and exits 1, having made everything else.
    age = shutil.which("age-keygen") is not None
    assert result.returncode == (0 if age else 1), result.stdout + result.stderr
    if not age:
        (copy / "secrets" / "backup-identity.txt").write_text("AGE-SECRET-KEY-1TEST\n")
    return copy
