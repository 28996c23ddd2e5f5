"""Apply Alembic migrations programmatically, from ``cmschat migrate`` and ``cmschat serve``."""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (and the Mako templates it loads) is imported where a migration runs: ~160 ms that
# every CLI command, and every process of the test suite, paid for nothing.

log = logging.getLogger(__name__)

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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("cmschat.db") / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _newer_than_code(connection: Connection, config: Config) -> list[str]:
    """The database's schema revisions this code's migrations do not know: a newer release
    migrated it (empty: none)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = []
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:  # alembic's ResolutionError: not among this code's revisions
            unknown.append(revision)
    return unknown


def _run(connection: Connection, action: str, revision: str) -> list[str]:
    from alembic import command

    config = alembic_config(connection)
    if action == "upgrade" and revision == "head":
        newer = _newer_than_code(connection, config)
        if newer:
            # A blue/green release runs the previous code beside the new schema, and a
            # rollback starts it again: it must run, not stop on a revision it cannot read.
            log.warning(
                "database schema %s is newer than this cmschat's migrations: left as it is "
                "(safe while the newer release's migrations are expand-only, docs/deploy.md)",
                ", ".join(newer),
            )
            return newer
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)
    return []


async def run_migrations(
    engine: AsyncEngine, *, action: str = "upgrade", revision: str = "head"
) -> list[str]:
    """Upgrade (or downgrade) the database; several instances starting at once take turns.

    Returns the database's revisions newer than this code (a newer release migrated it: an
    upgrade to ``head`` then leaves the schema as it is and logs a warning), else []."""
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
            newer: list[str] = await connection.run_sync(_run, action, revision)
            await connection.commit()
        finally:
            if locked:
                await connection.execute(
                    text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK}
                )
    return newer


async def is_migrated(engine: AsyncEngine) -> bool:
    """True if ``cmschat migrate`` has run on this database (it has a schema revision)."""
    async with engine.connect() as connection:
        if not await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return False
        return await connection.scalar(text("SELECT version_num FROM alembic_version")) is not None
