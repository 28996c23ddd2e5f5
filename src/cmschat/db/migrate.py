"""Apply Alembic migrations programmatically, from ``cmschat migrate`` and ``cmschat serve``."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.errors import ConfigError

MIGRATION_LOCK = "cmschat.migrate"
MIGRATION_LOCK_SECONDS = 120


# Tables the migrations make by hand (full-text indexes with SQLite's FTS5 shadow tables,
# the audit expiry permit): not ORM models, so autogenerate and the model check skip them.
DERIVED_TABLE_PREFIXES = ("message_search", "audit_expiry_permit")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic filter: everything but the derived tables."""
    return not (type_ == "table" and name is not None and name.startswith(DERIVED_TABLE_PREFIXES))


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(files("cmschat.db") / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run(connection: Connection, action: str, revision: str) -> None:
    config = alembic_config(connection)
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


async def run_migrations(
    engine: AsyncEngine, *, action: str = "upgrade", revision: str = "head"
) -> None:
    """Upgrade (or downgrade) the database; several instances starting at once take turns."""
    async with engine.connect() as connection:
        locked = connection.dialect.name in ("mysql", "mariadb")
        if locked:
            got: Any = await connection.scalar(
                text("SELECT GET_LOCK(:name, :seconds)"),
                {"name": MIGRATION_LOCK, "seconds": MIGRATION_LOCK_SECONDS},
            )
            if got != 1:
                raise ConfigError("database: another instance is still migrating; try again")
        try:
            await connection.run_sync(_run, action, revision)
            await connection.commit()
        finally:
            if locked:
                await connection.execute(
                    text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK}
                )


async def is_migrated(engine: AsyncEngine) -> bool:
    """True if ``cmschat migrate`` has run on this database (it has a schema revision)."""
    async with engine.connect() as connection:
        if not await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return False
        return await connection.scalar(text("SELECT version_num FROM alembic_version")) is not None
