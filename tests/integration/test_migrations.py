"""Migrations run from empty on SQLite and MariaDB, round-trip, and match the models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.accounts.models import Role, User
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.db.migrate import DERIVED_TABLE_PREFIXES, include_name, run_migrations
from cmschat.db.models import metadata
from cmschat.db.session import Database, create_engine
from tests import support


@pytest.fixture(params=["sqlite", "mariadb"])
async def empty_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An engine on a brand-new, empty database."""
    if request.param == "sqlite":
        engine = create_engine(support.sqlite_url(tmp_path / "empty.db"))
        yield engine
        await engine.dispose()
        return
    support.mariadb_available()
    url = await support.create_mariadb_database()
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        await support.drop_mariadb_database(url)


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    names = set(inspect(connection).get_table_names()) - {"alembic_version"}
    return {name for name in names if include_name(name, "table", None)}


async def test_upgrade_from_empty_matches_the_models(empty_engine: AsyncEngine) -> None:
    await run_migrations(empty_engine)
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(_tables) == set(metadata.tables)
        assert await connection.run_sync(_differences) == []


async def test_downgrade_to_base_and_up_again(empty_engine: AsyncEngine) -> None:
    await run_migrations(empty_engine)
    await run_migrations(empty_engine, action="downgrade", revision="base")
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(_tables) == set()
    await run_migrations(empty_engine)
    await run_migrations(empty_engine)  # a second upgrade is a no-op
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_korean_and_emoji_round_trip(empty_engine: AsyncEngine) -> None:
    await run_migrations(empty_engine)
    db = audited(Database(empty_engine, FakeClock()))
    name = "김민지 👩‍💻 🇰🇷 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"
    async with db.unit_of_work(SYSTEM_SETUP) as session:
        session.add(
            User(
                username="minji",
                display_name=name,
                role=Role.member,
                is_active=True,
                must_change_password=False,
                password_hash="x",
                password_changed_at=db.clock.now(),
            )
        )
    async with db.unit_of_work(SYSTEM_SETUP) as session:
        stored = await session.scalar(text("SELECT display_name FROM users"))
    assert stored == name


@pytest.mark.parametrize("empty_engine", ["mariadb"], indirect=True)
async def test_mariadb_tables_are_innodb_utf8mb4(empty_engine: AsyncEngine) -> None:
    await run_migrations(empty_engine)
    async with empty_engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT table_name, engine, table_collation FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name <> 'alembic_version'"
                )
            )
        ).all()
    assert {row[0] for row in rows} == set(metadata.tables) | set(DERIVED_TABLE_PREFIXES)
    assert {(row[1], row[2]) for row in rows} == {("InnoDB", "utf8mb4_unicode_ci")}


def _page_tail_parts(connection: Connection) -> tuple[bool, set[str]]:
    """Whether messages has page_tail, and the names of the triggers that clear it."""
    columns = {column["name"] for column in inspect(connection).get_columns("messages")}
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = "SELECT trigger_name FROM information_schema.triggers"
        query += " WHERE trigger_schema = DATABASE()"
    triggers = {name for (name,) in connection.execute(text(query)) if "page_tail" in name}
    return "page_tail" in columns, triggers


async def test_0010_down_and_up_removes_and_restores_the_tail(empty_engine: AsyncEngine) -> None:
    await run_migrations(empty_engine)
    async with empty_engine.connect() as connection:
        has_column, triggers = await connection.run_sync(_page_tail_parts)
    expected = 6 if empty_engine.dialect.name == "sqlite" else 7  # MariaDB: users' delete
    assert has_column and len(triggers) == expected
    await run_migrations(empty_engine, action="downgrade", revision="0009")
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(_page_tail_parts) == (False, set())
    await run_migrations(empty_engine)
    async with empty_engine.connect() as connection:
        assert await connection.run_sync(_page_tail_parts) == (True, triggers)
        assert await connection.run_sync(_differences) == []
