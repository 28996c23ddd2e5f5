"""Test helpers shared by the suites: databases on SQLite and MariaDB, named users."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from cmschat.audit.models import GENESIS_HASH, AuditEvent
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.migrate import run_migrations
from cmschat.db.models import metadata
from cmschat.db.session import Database, create_engine
from cmschat.settings import AuthSettings, ChatSettings, Environment, RetentionSettings, Settings

MARIADB_SERVER = os.environ.get("CMSCHAT_TEST_MARIADB", "mysql+asyncmy://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("CMSCHAT_TEST_REDIS", "redis://127.0.0.1:6379/15")
TEST_SECRET = "test-secret-" + "k" * 40
PASSWORD = "Correct-Horse-7-battery"
T = TypeVar("T")


BACKENDS = ["sqlite", "mariadb"]
"""Every database-backed test runs on both."""


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop, even from inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def service_missing(name: str, error: BaseException) -> None:
    """Skip locally when a service is absent; in CI its absence is a failure."""
    message = f"{name} is not reachable: {error}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must start it: see .ci/run)")
    pytest.skip(message)


def required_file_missing(path: Path, why: str) -> None:
    """Skip locally when a file a test needs is absent; in CI its absence is a failure."""
    message = f"{why}: no {path}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must provide it)")
    pytest.skip(message)


async def _server_ping(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def create_mariadb_database() -> str:
    """A new, empty utf8mb4 database on the MariaDB service; returns its URL."""
    name = f"cmschat_test_{os.getpid()}_{secrets.token_hex(4)}"
    engine = create_engine(MARIADB_SERVER + "/")
    try:
        async with engine.connect() as connection:
            await connection.execute(
                text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            )
    finally:
        await engine.dispose()
    return f"{MARIADB_SERVER}/{name}"


async def drop_mariadb_database(url: str) -> None:
    """Drop a database made by create_mariadb_database."""
    name = make_url(url).database
    assert name and name.startswith("cmschat_test_")
    engine = create_engine(MARIADB_SERVER + "/")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await engine.dispose()


def mariadb_available() -> None:
    """Skip or fail (in CI) unless MariaDB answers."""
    try:
        run_sync(_server_ping(MARIADB_SERVER + "/"))
    except Exception as exc:
        service_missing("MariaDB", exc)


async def empty_all_tables(url: str) -> None:
    """Delete every row (children first), keeping the migrated schema.

    The audit trail refuses DELETE; TRUNCATE (a schema operation, which fires no trigger)
    empties it, and the chain head goes back to the genesis.
    """
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for table in reversed(metadata.sorted_tables):
                if table.name == "audit_events":
                    await connection.execute(text("TRUNCATE TABLE audit_events"))
                elif table.name == "audit_head":
                    await connection.execute(
                        table.update().values(last_id=0, last_hash=GENESIS_HASH)
                    )
                else:
                    await connection.execute(table.delete())
    finally:
        await engine.dispose()


def settings_for(database_url: str, data_dir: Path, **extra: Any) -> Settings:
    """Test settings on ``database_url``: cheap bcrypt, no daily purge (tests run it with a
    fake clock), no send rate (the clock stands still, so it would never refill; its own
    tests turn it on); ``extra`` replaces or adds settings."""
    defaults: dict[str, Any] = {
        "auth": AuthSettings(bcrypt_rounds=4),
        "retention": RetentionSettings(run_daily=False),
        "chat": ChatSettings(send_rate=0),
    }
    return Settings(
        environment=Environment.test,
        database_url=database_url,
        data_dir=data_dir,
        secret_key=TEST_SECRET,
        _env_file=None,  # type: ignore[call-arg]
        **(defaults | extra),
    )


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of an SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def migrated_sqlite_template(directory: Path) -> Path:
    """An SQLite file migrated to head, to copy for each test."""
    path = directory / "template.db"
    engine = create_engine(sqlite_url(path))

    async def migrate() -> None:
        try:
            await run_migrations(engine)
        finally:
            await engine.dispose()

    run_sync(migrate())
    return path


def copy_sqlite(template: Path, target: Path) -> str:
    """A fresh database for one test, copied from the template."""
    shutil.copyfile(template, target)
    return sqlite_url(target)


@dataclass
class NamedUser:
    """A user the tests know by name, with their password."""

    id: int
    username: str
    password: str
    role: str

    async def login(self, client: httpx.AsyncClient) -> dict[str, str]:
        """Sign in and return the Authorization header."""
        response = await client.post(
            "/api/v1/auth/login", json={"username": self.username, "password": self.password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error object of a JSON error response."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


async def audit_events(db: Database, **where: object) -> list[AuditEvent]:
    """The audit trail in chain order, optionally only events with these field values."""
    async with db.unit_of_work(SYSTEM_CLI) as session:
        statement = select(AuditEvent).order_by(AuditEvent.id)
        for name, value in where.items():
            statement = statement.where(getattr(AuditEvent, name) == value)
        return list((await session.scalars(statement)).all())


async def drop_redis_keys(prefix: str) -> None:
    """Every key under ``prefix:`` on the test Redis (what a test's instances left)."""
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
