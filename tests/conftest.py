"""Fixtures: every data-touching test runs on SQLite and on the real MariaDB service."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.settings import Settings
from tests import support
from tests.processes import free_port
from tests.s3server import s3_server  # noqa: F401 - a fixture for every suite
from tests.support import PASSWORD, NamedUser

BACKENDS = support.BACKENDS


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per run."""
    return support.migrated_sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """One migrated MariaDB database per run, dropped at the end."""
    support.mariadb_available()
    url = support.run_sync(support.create_mariadb_database())

    async def migrate() -> None:
        from cmschat.db.migrate import run_migrations
        from cmschat.db.session import create_engine

        engine = create_engine(url)
        try:
            await run_migrations(engine)
        finally:
            await engine.dispose()

    try:
        support.run_sync(migrate())
        yield url
    finally:
        support.run_sync(support.drop_mariadb_database(url))


@pytest.fixture(params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """A clean, migrated database for one test: a copied SQLite file, or emptied MariaDB."""
    if request.param == "sqlite":
        yield support.copy_sqlite(sqlite_template, tmp_path / "test.db")
        return
    url: str = request.getfixturevalue("mariadb_url")
    await support.empty_all_tables(url)
    try:
        yield url
    finally:
        await support.empty_all_tables(url)


@pytest.fixture
def clock() -> FakeClock:
    """Time that only moves when a test says so."""
    return FakeClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings: a fresh database, a temporary data dir, cheap bcrypt."""
    return support.settings_for(database_url, tmp_path / "var")


@pytest.fixture
async def unreachable_database(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose MariaDB does not answer (nothing listens on its port)."""
    url = f"mysql+asyncmy://root@127.0.0.1:{free_port()}/cmschat"
    application = create_app(support.settings_for(url, tmp_path / "var"), clock=FakeClock())
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    """A running app (its lifespan entered)."""
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def context(app: FastAPI) -> AppContext:
    """The running app's context (database, clock, settings)."""
    result: AppContext = app.state.context
    return result


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _make_user(context: AppContext, username: str, role: Role) -> NamedUser:
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        user = await accounts.create_user(
            session,
            username=username,
            password=PASSWORD,
            role=role,
            display_name=username.title(),
            must_change_password=False,
            bcrypt_rounds=context.settings.auth.bcrypt_rounds,
            clock=context.clock,
        )
    return NamedUser(id=user.id, username=username, password=PASSWORD, role=role.value)


@pytest.fixture
async def admin(context: AppContext) -> NamedUser:
    """An admin who has already set their own password."""
    return await _make_user(context, "root-admin", Role.admin)


@pytest.fixture
async def alice(context: AppContext) -> NamedUser:
    """A member."""
    return await _make_user(context, "alice", Role.member)


@pytest.fixture
async def bob(context: AppContext) -> NamedUser:
    """Another member."""
    return await _make_user(context, "bob", Role.member)


@pytest.fixture
async def agent(context: AppContext) -> NamedUser:
    """An agent."""
    return await _make_user(context, "agnes", Role.agent)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of every logger, down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis, removed afterwards."""
    client = Redis.from_url(support.REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        support.service_missing("Redis", exc)
    prefix = f"test-{secrets.token_hex(4)}"
    await client.aclose()
    try:
        yield prefix
    finally:
        await support.drop_redis_keys(prefix)
