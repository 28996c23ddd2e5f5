"""The embedded default keeps its data private: database, WAL, SHM and folders 0600/0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import FAST, change_first_admin_password
from tests.processes import clean_env, cmschat, running_server


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems give a service (022): it alone would leave files 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_creates_a_private_data_directory_and_database(tmp_path: Path) -> None:
    result = cmschat(tmp_path, "migrate", env=clean_env(**FAST))
    assert result.returncode == 0, result.stderr
    data = tmp_path / "var"
    assert mode(data) == 0o700
    assert mode(data / "cmschat.db") == 0o600
    for path in data.iterdir():
        assert mode(path) & 0o077 == 0, path


def test_an_older_world_readable_database_is_tightened(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    database = tmp_path / "var" / "cmschat.db"
    database.chmod(0o644)
    again = cmschat(tmp_path, "migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert mode(database) == 0o600


@pytest.mark.slow
def test_serve_keeps_database_wal_shm_secret_and_files_private(tmp_path: Path) -> None:
    with running_server(tmp_path, clean_env(**FAST), "modes") as server:
        change_first_admin_password(server)  # writes: the WAL and SHM exist now
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            assert http.get("/readyz").status_code == 200
        data = tmp_path / "var"
        found = {path.name: mode(path) for path in data.iterdir()}
        assert {"cmschat.db", "cmschat.db-wal", "cmschat.db-shm", "files"} <= set(found), found
        assert mode(data) == 0o700
        assert found["files"] == 0o700
        for name in ("cmschat.db", "cmschat.db-wal", "cmschat.db-shm"):
            assert found[name] == 0o600, (name, oct(found[name]))
        assert all(value & 0o077 == 0 for value in found.values()), found
        assert server.stop() == 0
