"""Reading the facts of a backup out of a ``mariadb-dump`` stream as it passes by.

With ``--skip-extended-insert`` every row is one ``INSERT INTO `t` VALUES (…);`` line
(mariadb-dump escapes newlines inside values), so counting rows is counting lines. The
few rows the manifest needs (Alembic revision, audit head, attachments) are parsed.
"""

from __future__ import annotations

import io
import re
from typing import IO, Any

from cmschat.backup.engines import Facts
from cmschat.backup.manifest import FileEntry
from cmschat.db.migrate import DERIVED_TABLE_PREFIXES

_INSERT = b"INSERT INTO `"
_CREATE = re.compile(rb"CREATE TABLE `([^`]+)` \($")
_COLUMN = re.compile(rb"^  `([^`]+)` ")
_MASTER = re.compile(rb"MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)")
_UNESCAPE = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}
PARSED = ("alembic_version", "audit_head", "attachments")


def parse_values(line: bytes) -> list[str | None]:
    """The values of a one-row INSERT line, unescaped (NULL as None)."""
    body = line[line.index(b" VALUES (") + 9 : line.rindex(b")")].decode()
    values: list[str | None] = []
    i = 0
    while i < len(body):
        if body[i] == "'":
            j, parts = i + 1, []
            while body[j] != "'":
                if body[j] == "\\":
                    parts.append(_UNESCAPE.get(body[j + 1], body[j + 1]))
                    j += 2
                else:
                    parts.append(body[j])
                    j += 1
            values.append("".join(parts))
            i = j + 1
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            bare = body[i:j]
            values.append(None if bare == "NULL" else bare)
            i = j
        i += 1  # the comma
    return values


class DumpScanner(io.RawIOBase):
    """A reader over the dump that counts and collects as bytes go through it."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.tail = b""
        self.counts: dict[str, int] = {}
        self.columns: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[str | None]]] = {name: [] for name in PARSED}
        self.binlog: dict[str, Any] | None = None
        self.complete = False
        self._creating: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        if not data:
            if self.tail:
                self._line(self.tail)
                self.tail = b""
            return 0
        buffer[: len(data)] = data
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            self._line(line)
        return len(data)

    def _line(self, line: bytes) -> None:
        if line.startswith(_INSERT):
            table = line[len(_INSERT) : line.index(b"`", len(_INSERT))].decode()
            self.counts[table] = self.counts.get(table, 0) + 1
            if table in self.rows:
                self.rows[table].append(parse_values(line))
            return
        if self._creating is not None:
            column = _COLUMN.match(line)
            if column:
                self.columns[self._creating].append(column.group(1).decode())
            elif line.startswith(b")"):
                self._creating = None
            return
        if line.startswith(b"CREATE TABLE"):
            created = _CREATE.match(line)
            if created:
                self._creating = created.group(1).decode()
                self.columns[self._creating] = []
                self.counts.setdefault(self._creating, 0)
        elif line.startswith(b"-- CHANGE MASTER"):
            found = _MASTER.search(line)
            if found:
                self.binlog = {"file": found.group(1).decode(), "position": int(found.group(2))}
        elif line.startswith(b"-- Dump completed"):
            self.complete = True

    def _named(self, table: str) -> list[dict[str, str | None]]:
        names = self.columns.get(table, [])
        return [dict(zip(names, row, strict=False)) for row in self.rows[table]]

    def facts(self) -> Facts:
        """What the dump held."""
        facts = Facts(
            row_counts={
                name: count
                for name, count in self.counts.items()
                if name != "alembic_version" and not name.startswith(DERIVED_TABLE_PREFIXES)
            },
            binlog=self.binlog,
        )
        for row in self._named("alembic_version"):
            facts.alembic_revision = row.get("version_num")
        for row in self._named("audit_head"):
            facts.audit_head = (int(row["last_id"] or 0), str(row["last_hash"]))
        facts.files = [
            FileEntry(str(row["storage_key"]), int(row["size"] or 0), str(row["sha256"]))
            for row in self._named("attachments")
            if row.get("state") == "ready"
        ]
        return facts
