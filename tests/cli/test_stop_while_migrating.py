"""A stop asked for while ``serve`` migrates waits for the migration (``cli_signals``).

The migration is held at its first statement by a table lock on ``alembic_version`` (taken
by the test in another connection), so the signal arrives while it runs, whatever the
machine's speed. On MariaDB, where a migration cut short leaves the schema half changed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tests import support
from tests.processes import Server, clean_env, launch, launch_server

WITHIN = 60.0


@asynccontextmanager
async def migration_held(url: str) -> AsyncIterator[AsyncConnection]:
    """``alembic_version`` made and locked: a migration's first read of it waits."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as holder:
            await holder.execute(
                text(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "PRIMARY KEY (version_num))"
                )
            )
            await holder.execute(text("LOCK TABLES alembic_version WRITE"))
            yield holder
    finally:
        await engine.dispose()


async def wait_until_migration_waits(holder: AsyncConnection, database: str) -> None:
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        waiting = await holder.scalar(
            text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE DB = :db AND STATE LIKE 'Waiting for table%' AND ID <> CONNECTION_ID()"
            ),
            {"db": database},
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    pytest.fail("serve's migration never reached the locked table")


def wait_for_line(server: Server, fragment: str) -> None:
    deadline = time.monotonic() + WITHIN
    while fragment not in server.stderr():
        if server.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {fragment!r} (exit {server.process.poll()}):\n{server.stderr()}")
        time.sleep(0.05)


async def recorded_revisions(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


@pytest.fixture
async def mariadb_url() -> AsyncIterator[str]:
    support.mariadb_available()
    url = await support.create_mariadb_database()
    try:
        yield url
    finally:
        await support.drop_mariadb_database(url)


def _start(tmp_path: Path, url: str, command: str) -> Server:
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_DATABASE_URL=url,
        CMSCHAT_DATA_DIR=str(tmp_path / "data"),
        CMSCHAT_SECRET_KEY=support.TEST_SECRET,
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
    )
    if command == "serve":
        return launch_server(tmp_path, env, "serve")
    return launch(tmp_path, env, command, command)


async def _signalled_while_migrating(
    tmp_path: Path, url: str, then: Callable[[Server], None], command: str = "serve"
) -> Server:
    async with migration_held(url) as holder:
        server = _start(tmp_path, url, command)
        try:
            await wait_until_migration_waits(holder, str(make_url(url).database))
            server.process.send_signal(signal.SIGTERM)
            wait_for_line(server, "SIGTERM received while the database is prepared")
            then(server)
            await holder.execute(text("UNLOCK TABLES"))
        except BaseException:
            server.process.kill()
            raise
    server.process.wait(timeout=WITHIN)
    return server


async def test_sigterm_while_migrating_finishes_the_migration_then_stops(
    tmp_path: Path, mariadb_url: str
) -> None:
    server = await _signalled_while_migrating(tmp_path, mariadb_url, lambda _server: None)

    assert server.process.returncode == 0, server.stderr()
    assert "stopped by SIGTERM before serving; the database is prepared" in server.stderr()
    assert "Uvicorn running" not in server.stderr() + server.stdout()
    # Migrated to the end, the first admin made, its one-time password shown all the same.
    assert len(await recorded_revisions(mariadb_url)) == 1
    assert "one-time password:" in server.stdout()


async def test_sigterm_while_migrate_runs_ends_it_once_migrated(
    tmp_path: Path, mariadb_url: str
) -> None:
    server = await _signalled_while_migrating(
        tmp_path, mariadb_url, lambda _server: None, command="migrate"
    )

    assert server.process.returncode == 0, server.stderr()
    assert server.stdout() == "cmschat: database is up to date\n"
    assert len(await recorded_revisions(mariadb_url)) == 1


async def test_a_second_sigterm_stops_at_once(tmp_path: Path, mariadb_url: str) -> None:
    def again(server: Server) -> None:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=WITHIN) == 128 + signal.SIGTERM, server.stderr()

    server = await _signalled_while_migrating(tmp_path, mariadb_url, again)

    assert await recorded_revisions(mariadb_url) == []
    assert "one-time password:" not in server.stdout()
