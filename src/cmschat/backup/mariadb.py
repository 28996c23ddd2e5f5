"""MariaDB backups: ``mariadb-dump --single-transaction`` streamed through zstd and age.

The dump is one consistent snapshot (works against a remote server or RDS) and is read
once, on its way to the encryptor: one INSERT per row lets the row counts, the audit head,
the Alembic revision and the attachment list be taken from the very snapshot restored
later. Restores merge those lines into multi-row INSERTs on the way to the client
(``batching.py``: the server parses far fewer statements), load into a fresh database
first and swap it in only once complete.
Credentials go to the clients through a private defaults file, never the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pyrage
from sqlalchemy.engine import make_url

from cmschat.backup.batching import InsertBatcher
from cmschat.backup.crypto import Sealed, open_sealed, seal
from cmschat.backup.dumpscan import DumpScanner
from cmschat.backup.engines import Facts, has_content
from cmschat.db.session import create_engine
from cmschat.errors import CmschatError

DUMP_OPTIONS = (
    "--single-transaction",
    "--skip-extended-insert",
    "--no-autocommit",
    "--hex-blob",
    "--triggers",
    "--no-tablespaces",
    "--default-character-set=utf8mb4",
)


def feed_client(command: list[str], errors: Path, feed: Callable[[IO[bytes]], None]) -> int:
    """Run a client with ``feed`` writing its standard input; its exit status.

    If feeding fails the client is killed, so a half-fed restore never commits its tail.
    """
    with errors.open("w") as error_log:
        process = subprocess.Popen(  # noqa: S603 - our fixed clients
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=error_log
        )
        stdin: IO[bytes] | None = process.stdin
        assert stdin is not None  # noqa: S101 - asked for a pipe
        try:
            feed(stdin)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        return process.wait()


class MariadbEngine:
    """One MariaDB database, reached with the command-line clients."""

    kind = "mariadb"
    artifact = "database.sql.zst.age"

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        if not parsed.database or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", parsed.database):
            # The name goes into statements and file names: letters, digits, underscores.
            raise CmschatError("backup: the database name must be letters, digits and _")
        self.database = parsed.database
        self._client = {
            "host": parsed.host or "127.0.0.1",
            "port": str(parsed.port or 3306),
            "user": parsed.username or "root",
            "password": parsed.password or "",
        }

    @contextlib.contextmanager
    def defaults(self) -> Iterator[str]:
        """A 0600 option file with the connection settings, removed afterwards."""
        fd, name = tempfile.mkstemp(prefix="cmschat-my-", suffix=".cnf")
        try:
            with os.fdopen(fd, "w") as file:
                file.write("[client]\n")
                for key, value in self._client.items():
                    if value:
                        file.write(f"{key}={value}\n")
            yield f"--defaults-extra-file={name}"
        finally:
            os.unlink(name)

    def sql(self, statement: str, database: str | None = None) -> list[list[str]]:
        """Run statements with the mariadb client; the rows of the last one, as text."""
        with self.defaults() as defaults:
            result = subprocess.run(  # noqa: S603 - fixed client, our own statements
                ["mariadb", defaults, "-N", "-B", database or self.database],  # noqa: S607
                input=statement,
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise CmschatError(f"backup: mariadb: {last_line(result.stderr)}")
        return [line.split("\t") for line in result.stdout.splitlines()]

    async def _on_database(self, work: Any) -> Any:
        engine = create_engine(self.url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    def exists(self) -> bool:
        """True if the database exists and has cmschat's schema."""
        names = self.sql("SHOW TABLES LIKE 'alembic_version'")
        return bool(names)

    def in_use(self) -> bool:
        """True if the database holds users, messages or files."""
        return bool(asyncio.run(self._on_database(has_content)))

    def scratch(self, directory: Path) -> MariadbEngine:
        """A new, empty database on the same server."""
        name = f"{self.database[:40]}_drill_{secrets.token_hex(4)}"
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        url = make_url(self.url).set(database=name)
        return MariadbEngine(url.render_as_string(hide_password=False))

    def drop(self) -> None:
        """Drop this (scratch) database."""
        self.sql(f"DROP DATABASE IF EXISTS `{self.database}`", database="mysql")

    def _binlog_on(self) -> bool:
        return self.sql("SELECT @@log_bin")[0][0] == "1"

    def snapshot(self, staging: Path, recipients: list[str]) -> tuple[Sealed, Facts]:
        """Dump, scan and seal in one pass."""
        options = [*DUMP_OPTIONS]
        if self._binlog_on():
            options.append("--master-data=2")
        errors = staging / "dump.err"
        with self.defaults() as defaults, errors.open("w") as error_log:
            process = subprocess.Popen(  # noqa: S603 - fixed client and options
                ["mariadb-dump", defaults, *options, self.database],  # noqa: S607
                stdout=subprocess.PIPE,
                stderr=error_log,
            )
            assert process.stdout is not None  # noqa: S101 - asked for a pipe
            scanner = DumpScanner(process.stdout)
            try:
                with (staging / self.artifact).open("xb") as writer:
                    sealed = seal(scanner, writer, recipients)
            finally:
                process.stdout.close()
                status = process.wait()
        if status != 0 or not scanner.complete:
            raise CmschatError(f"backup: mariadb-dump failed: {last_line(errors.read_text())}")
        return sealed, scanner.facts()

    def _load(self, source: Path, identity: Any, expected: Sealed, database: str) -> None:
        errors = source.with_suffix(".err")

        def feed(stdin: IO[bytes]) -> None:
            batcher = InsertBatcher(stdin)
            with source.open("rb") as reader:
                open_sealed(reader, batcher, identity, name=self.artifact, expected=expected)
            # The last batch goes out only once the whole artifact checked out; on an
            # error feed_client kills the client and restore drops the fresh database.
            batcher.finish()

        with self.defaults() as defaults:
            status = feed_client(["mariadb", defaults, "--binary-mode", database], errors, feed)
        if status != 0:
            raise CmschatError(f"restore: mariadb: {last_line(errors.read_text())}")

    def _tables(self, database: str) -> list[str]:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = '%s'"
        return [row[0] for row in self.sql(query % database, database="mysql")]

    def restore(
        self, source: Path, identity: pyrage.x25519.Identity, expected: Sealed, *, force: bool
    ) -> None:
        """Load into a new database, then move its tables over the old ones."""
        if not force and self.in_use():
            raise CmschatError("restore: the database is not empty; add --force to replace it")
        fresh = self.scratch(source.parent)
        try:
            self._load(source, identity, expected, fresh.database)
            self._swap_in(fresh.database)
        finally:
            fresh.drop()

    def _swap_in(self, fresh: str) -> None:
        # RENAME TABLE cannot move a table with triggers to another database: the
        # triggers are dropped in the fresh copy and made again on the moved tables.
        triggers = []
        query = "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = '%s'"
        for (name,) in self.sql(query % fresh, database="mysql"):
            row = self.sql(f"SHOW CREATE TRIGGER `{name}`", database=fresh)[0]
            triggers.append(row[2].replace("\\n", "\n").replace("\\t", "\t"))
            self.sql(f"DROP TRIGGER `{name}`", database=fresh)
        old = self._tables(self.database)
        drop = ", ".join(f"`{name}`" for name in old)
        moves = ", ".join(
            f"`{fresh}`.`{name}` TO `{self.database}`.`{name}`" for name in self._tables(fresh)
        )
        statements = ["SET FOREIGN_KEY_CHECKS=0"]
        if old:
            statements.append(f"DROP TABLE {drop}")
        statements.append(f"RENAME TABLE {moves}")
        self.sql("; ".join(statements))
        for create in triggers:
            # A trigger body has its own semicolons.
            self.sql(f"DELIMITER ;;\n{create};;\nDELIMITER ;\n")


def last_line(text: str) -> str:
    """The last non-empty line of a client's error output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"
