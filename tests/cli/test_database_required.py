"""Commands that need data refuse, in one line and creating nothing, where there is none.

An operator who runs ``cmschat audit verify`` from the wrong directory (or with the wrong
``CMSCHAT_DATABASE_URL``) must hear so, not get a fresh empty database and a confusing
"no such table". ``serve``, ``migrate`` and ``user create`` make the database instead.
"""

from __future__ import annotations

import secrets
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy import text

from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.session import Database, create_engine
from tests import support
from tests.cli.test_cli import FAST, assert_one_line_error
from tests.processes import clean_env, cmschat
from tests.support import PASSWORD

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

NEEDS_DATA = [
    ("audit", "verify"),
    ("user", "list"),
    ("user", "disable", "bob"),
    ("user", "enable", "bob"),
    ("user", "reset-password", "bob"),
    ("retention", "run"),
    ("retention", "run", "--dry-run"),
    ("backup", "run"),
    ("backup", "prune"),
    ("backup", "drill"),
]


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_printed(tmp_path: Path, flag: str) -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    result = cmschat(tmp_path, flag, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cmschat {declared}"
    assert version("cmschat") == declared
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", NEEDS_DATA, ids=" ".join)
def test_a_command_needing_data_refuses_where_there_is_no_database(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = cmschat(tmp_path, *command, env=clean_env(**FAST))
    line = assert_one_line_error(result, "no cmschat database", "cmschat migrate", status=1)
    assert str(tmp_path / "var" / "cmschat.db") in line  # says where it looked
    assert list(tmp_path.iterdir()) == []  # no ./var, no empty database


def test_an_empty_sqlite_file_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "cmschat.db").touch()
    result = cmschat(tmp_path, "audit", "verify", env=clean_env(**FAST))
    assert_one_line_error(result, "no cmschat tables", "cmschat migrate", status=1)


def test_after_migrate_the_same_command_works(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    result = cmschat(tmp_path, "audit", "verify", env=env)
    assert result.returncode == 0, result.stderr
    assert "audit chain intact" in result.stdout, result.stdout


async def _database_exists(name: str) -> bool:
    engine = create_engine(support.MARIADB_SERVER + "/")
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :n"),
                {"n": name},
            )
            return bool(found)
    finally:
        await engine.dispose()


async def test_mariadb_without_the_database_or_its_tables_is_refused(tmp_path: Path) -> None:
    support.mariadb_available()
    secret = {"CMSCHAT_SECRET_KEY": secrets.token_urlsafe(36)}
    missing = f"cmschat_test_missing_{secrets.token_hex(4)}"
    env = clean_env(**FAST, **secret, CMSCHAT_DATABASE_URL=f"{support.MARIADB_SERVER}/{missing}")
    line = assert_one_line_error(
        cmschat(tmp_path, "audit", "verify", env=env), "no cmschat database", status=1
    )
    assert missing in line and "cmschat migrate" in line
    assert not await _database_exists(missing)

    url = await support.create_mariadb_database()
    try:
        env = clean_env(**FAST, **secret, CMSCHAT_DATABASE_URL=url)
        for command in (("user", "list"), ("retention", "run")):
            assert_one_line_error(
                cmschat(tmp_path, *command, env=env), "no cmschat tables", "cmschat migrate"
            )
    finally:
        await support.drop_mariadb_database(url)


async def test_account_commands_leave_the_same_audit_events_as_the_api(tmp_path: Path) -> None:
    """``user disable/enable/reset-password`` are audited like PATCH and POST .../password."""
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    made = cmschat(tmp_path, "user", "create", "bob", "--password-stdin", env=env, stdin=PASSWORD)
    assert made.returncode == 0, made.stderr
    for command in (("disable", "bob"), ("enable", "bob"), ("reset-password", "bob")):
        done = cmschat(tmp_path, "user", *command, env=env)
        assert done.returncode == 0, done.stderr
    assert cmschat(tmp_path, "user", "list", env=env).returncode == 0  # a read: no event

    db = audited(
        Database(create_engine(support.sqlite_url(tmp_path / "var" / "cmschat.db")), FakeClock())
    )
    try:
        events = await support.audit_events(db)
    finally:
        await db.engine.dispose()
    assert [(e.action, e.actor, e.target_type) for e in events] == [
        ("user.created", SYSTEM_CLI, "user"),
        ("user.disabled", SYSTEM_CLI, "user"),
        ("user.enabled", SYSTEM_CLI, "user"),
        ("user.password_reset", SYSTEM_CLI, "user"),
    ]
    assert len({e.target_id for e in events}) == 1
