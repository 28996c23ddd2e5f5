"""The database side of a backup: facts about a snapshot, and SQLite's snapshot and restore.

MariaDB's dump and restore live in ``mariadb.py``. Both engines write one encrypted
artifact and give the facts a restore is checked against: row counts per table, the
Alembic revision, the audit chain head, and the attachments whose bytes must come along.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyrage
import sqlalchemy
from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.engine import Connection, make_url

from cmschat.backup.crypto import Sealed, open_sealed, seal
from cmschat.backup.manifest import FileEntry
from cmschat.db.migrate import DERIVED_TABLE_PREFIXES
from cmschat.errors import CmschatError, Conflict

# Tables whose rows make a database "in use": a restore will not overwrite them unasked.
CONTENT_TABLES = ("users", "messages", "attachments")


@dataclass
class Facts:
    """What a snapshot holds, measured inside it."""

    row_counts: dict[str, int] = field(default_factory=dict)
    alembic_revision: str | None = None
    audit_head: tuple[int, str] | None = None
    files: list[FileEntry] = field(default_factory=list)
    binlog: dict[str, Any] | None = None


def counted_tables(connection: Connection) -> list[str]:
    """The tables whose rows a backup counts (not Alembic's, not derived search tables)."""
    return sorted(
        name
        for name in inspect(connection).get_table_names()
        if name != "alembic_version" and not name.startswith(("sqlite_", *DERIVED_TABLE_PREFIXES))
    )


def collect_facts(connection: Connection, *, with_counts: bool = True) -> Facts:
    """Row counts, revision, audit head and attachment list, read through one connection."""
    names = counted_tables(connection)
    facts = Facts()
    if with_counts:
        for name in names:
            count = connection.scalar(select(func.count()).select_from(table(name)))
            facts.row_counts[name] = int(count or 0)
    if "alembic_version" in inspect(connection).get_table_names():
        facts.alembic_revision = connection.scalar(text("SELECT version_num FROM alembic_version"))
    if "audit_head" in names:
        row = connection.execute(text("SELECT last_id, last_hash FROM audit_head WHERE id = 1"))
        head = row.first()
        if head is not None:
            facts.audit_head = (int(head[0]), str(head[1]))
    if "attachments" in names:
        rows = connection.execute(
            text(
                "SELECT storage_key, size, sha256 FROM attachments "
                "WHERE state = 'ready' ORDER BY id"
            )
        )
        facts.files = [FileEntry(str(key), int(size), str(sha)) for key, size, sha in rows]
    return facts


def has_content(connection: Connection) -> bool:
    """True if the database holds users, messages or files."""
    present = set(inspect(connection).get_table_names())
    for name in CONTENT_TABLES:
        if name in present and connection.scalar(select(func.count()).select_from(table(name))):
            return True
    return False


class Engine(Protocol):
    """A database kind that can be snapshotted into, and restored from, one artifact."""

    kind: str
    artifact: str
    url: str
    """The SQLAlchemy URL of the database this engine backs up and restores."""

    def in_use(self) -> bool:
        """True if the database holds users, messages or files (blocking)."""
        ...

    def exists(self) -> bool:
        """True if there is a cmschat database to back up (blocking)."""
        ...

    def scratch(self, directory: Path) -> Engine:
        """An engine for an empty scratch database (a file in ``directory``, or a new
        database on the same server), for drills (blocking)."""
        ...

    def drop(self) -> None:
        """Remove a scratch database made by ``scratch`` (blocking)."""
        ...

    def snapshot(self, staging: Path, recipients: list[str]) -> tuple[Sealed, Facts]:
        """Write the encrypted artifact into ``staging`` (blocking)."""
        ...

    def restore(
        self, source: Path, identity: pyrage.x25519.Identity, expected: Sealed, *, force: bool
    ) -> None:
        """Replace the database with the artifact's content, all or nothing (blocking)."""
        ...


def sqlite_path(database_url: str) -> Path:
    """The file of an SQLite URL."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise CmschatError("backup: an in-memory SQLite database cannot be backed up")
    return Path(database)


def _sync_facts(path: Path) -> tuple[Facts, bool]:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            return collect_facts(connection), has_content(connection)
    finally:
        engine.dispose()


class SqliteEngine:
    """The embedded database: SQLite's online backup API, restore by swapping the file."""

    kind = "sqlite"
    artifact = "database.sqlite.zst.age"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"

    def scratch(self, directory: Path) -> SqliteEngine:
        """A file in the scratch directory."""
        return SqliteEngine(directory / "drill.sqlite")

    def drop(self) -> None:
        """Remove the scratch file."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def snapshot(self, staging: Path, recipients: list[str]) -> tuple[Sealed, Facts]:
        """A consistent copy while writers go on (WAL readers never block them), sealed."""
        if not self.path.is_file():
            raise CmschatError(f"backup: there is no database at {self.path}")
        plain = staging / "snapshot.sqlite"
        source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        copy = sqlite3.connect(plain)
        try:
            source.execute("PRAGMA busy_timeout=10000")
            source.backup(copy)
            # The copy is a stand-alone file: no WAL beside it to lose.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
            source.close()
        try:
            facts, _ = _sync_facts(plain)
            with plain.open("rb") as reader, (staging / self.artifact).open("xb") as writer:
                sealed = seal(reader, writer, recipients)
        finally:
            plain.unlink(missing_ok=True)
        return sealed, facts

    def exists(self) -> bool:
        """True if the file exists."""
        return self.path.is_file()

    def in_use(self) -> bool:
        """True if the file holds users, messages or files."""
        return self.path.is_file() and _sync_facts(self.path)[1]

    def restore(
        self, source: Path, identity: pyrage.x25519.Identity, expected: Sealed, *, force: bool
    ) -> None:
        """Decrypt beside the database, check it, then rename it over the old file."""
        if not force and self.in_use():
            raise Conflict(
                f"restore: the database at {self.path} is not empty; "
                "stop cmschat and add --force to replace it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.restore-{secrets.token_hex(6)}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with source.open("rb") as reader, os.fdopen(fd, "wb") as writer:
                open_sealed(reader, writer, identity, name=self.artifact, expected=expected)
                writer.flush()
                os.fsync(writer.fileno())
            check = sqlite3.connect(temp)
            try:
                verdict = check.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                check.close()
            if verdict != "ok":
                raise CmschatError(f"restore: the restored database fails its check: {verdict}")
            # The old database's WAL must not be replayed into the new file.
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)


def check_tables(connection: Connection) -> list[str]:
    """Problems ``CHECK TABLE`` (MariaDB) or ``PRAGMA integrity_check`` (SQLite) reports."""
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql("PRAGMA integrity_check").all()
        return [str(row[0]) for row in rows if row[0] != "ok"]
    problems = []
    for name in counted_tables(connection):
        quoted = connection.dialect.identifier_preparer.quote(name)
        for row in connection.exec_driver_sql(f"CHECK TABLE {quoted}").all():
            if row[2] in ("error", "warning") or (row[2] == "status" and row[3] != "OK"):
                problems.append(f"{name}: {row[3]}")
    return problems
