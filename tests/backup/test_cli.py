"""``cmschat backup …`` as an operator runs it: a real process on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import FAST, assert_one_line_error
from tests.processes import clean_env, cmschat
from tests.support import PASSWORD


@pytest.mark.slow
def test_backup_commands_on_the_embedded_default(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    created = cmschat(
        tmp_path,
        "user",
        "create",
        "alice",
        "--role",
        "member",
        "--password-stdin",
        env=env,
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stderr

    made = cmschat(tmp_path, "backup", "run", env=env)
    assert made.returncode == 0, made.stderr
    assert "COPY IT SOMEWHERE SAFE" in made.stderr and "backup-identity.txt" in made.stderr
    assert (tmp_path / "var" / "backup-identity.txt").exists()
    listed = cmschat(tmp_path, "backup", "list", env=env)
    backup_id = listed.stdout.splitlines()[0].split()[0]
    assert backup_id.endswith("-full") and backup_id in made.stdout
    (row,) = json.loads(cmschat(tmp_path, "backup", "list", "--json", env=env).stdout)
    assert row["id"] == backup_id and row["status"] == "complete" and row["size"] > 0
    assert {"id", "kind", "created_at", "size", "status"} <= set(row)

    # The second backup reuses the key, silently.
    again = cmschat(tmp_path, "backup", "run", env=env)
    assert again.returncode == 0 and "WARNING" not in again.stderr

    verified = cmschat(tmp_path, "backup", "verify", backup_id, env=env)
    assert verified.returncode == 0 and "intact" in verified.stdout
    drilled = cmschat(tmp_path, "backup", "drill", env=env)
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert "RTO" in drilled.stdout and "passed" in drilled.stdout

    assert_one_line_error(
        cmschat(tmp_path, "backup", "run", "--kind", "incremental", env=env), "SQLite", status=1
    )
    assert_one_line_error(
        cmschat(tmp_path, "backup", "restore", backup_id, env=env), "not empty", "--force"
    )
    assert_one_line_error(
        cmschat(tmp_path, "backup", "finish-restore", str(tmp_path / "nowhere"), env=env),
        "holds no prepared restore",
    )
    restored = cmschat(tmp_path, "backup", "restore", backup_id, "--force", env=env)
    assert restored.returncode == 0, restored.stderr
    assert_one_line_error(
        cmschat(tmp_path, "backup", "verify", "20200101T000000Z-full", env=env), "no complete"
    )
    assert_one_line_error(
        cmschat(tmp_path, "backup", "verify", "../etc", env=env), "not a backup id"
    )
    pruned = cmschat(tmp_path, "backup", "prune", env=env)
    assert pruned.returncode == 0 and "removed 0 backups" in pruned.stdout

    # A private key pasted as a recipient is refused without being echoed.
    secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    line = assert_one_line_error(
        cmschat(tmp_path, "backup", "run", env=env | {"CMSCHAT_BACKUP__RECIPIENTS": secret}),
        "CMSCHAT_BACKUP__RECIPIENTS",
    )
    assert secret not in line


def test_backup_refuses_where_there_is_no_database(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    assert_one_line_error(cmschat(tmp_path, "backup", "run", env=env), "no cmschat database")
    assert not (tmp_path / "var" / "cmschat.db").exists()


def test_mariadb_without_recipients_is_a_one_line_error(tmp_path: Path) -> None:
    env = clean_env(
        **FAST,
        CMSCHAT_DATABASE_URL="mysql+asyncmy://nobody@127.0.0.1:1/none",
        CMSCHAT_SECRET_KEY="k" * 40,
    )
    assert_one_line_error(
        cmschat(tmp_path, "backup", "run", env=env), "CMSCHAT_BACKUP__RECIPIENTS", "required"
    )


def test_restore_until_takes_an_iso_time(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    line = assert_one_line_error(
        cmschat(tmp_path, "backup", "restore", "20260101T000000Z-full", "--until", "noon", env=env),
        "--until",
    )
    assert "2026-03-01T14:30:00+09:00" in line


def test_backup_list_on_an_empty_target_says_so(tmp_path: Path) -> None:
    listed = cmschat(tmp_path, "backup", "list", env=clean_env(**FAST))
    assert listed.returncode == 0, listed.stderr
    target = (tmp_path / "var" / "backups").resolve()
    assert listed.stdout == f"cmschat: no backups in {target}\n"
    # Scripts get an empty list, as before.
    as_json = cmschat(tmp_path, "backup", "list", "--json", env=clean_env(**FAST))
    assert json.loads(as_json.stdout) == []
