"""MariaDB binary logs as incremental backups, and replaying them up to a moment.

An incremental artifact is ``mariadb-binlog --read-from-remote-server`` text (with
``TZ=UTC``, so its event headers are UTC) from the previous backup's binary-log position
to the current one. Replaying it through ``mariadb`` redoes those transactions; with an
``until`` time the replay stops before the first transaction that started later.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pyrage

from cmschat.backup.crypto import Sealed, open_sealed, seal_output
from cmschat.backup.mariadb import MariadbEngine, feed_client, last_line
from cmschat.backup.rewrite_db import RewriteDb
from cmschat.errors import CmschatError, Invalid

ARTIFACT = "binlog.sql.zst.age"
ENABLE_BINLOG = (
    "incremental backups need the server's binary log: set log_bin=ON (e.g. "
    "log_bin=mariadb-bin) and binlog_format=ROW under [mariadb] in the server's "
    "configuration, restart it, then make a full backup"
)
_GTID = re.compile(rb"^#(\d{6} +\d{1,2}:\d\d:\d\d) server id \d+ +end_log_pos \d+ .*\tGTID ")
_TRAILER = b"\nDELIMITER ;\nROLLBACK /* cut by cmschat restore --until */;\n"
# A restore's swap: tables moved in from its scratch database (MariadbEngine.scratch).
_SWAP = re.compile(rb"^RENAME TABLE `[A-Za-z0-9_]*_drill_[0-9a-f]{8}`\.", re.MULTILINE)


def status(engine: MariadbEngine) -> dict[str, Any]:
    """The current binary-log file and position; Invalid naming the setting when it is off."""
    if engine.sql("SELECT @@log_bin")[0][0] != "1":
        raise Invalid(ENABLE_BINLOG)
    rows = engine.sql("SHOW MASTER STATUS")
    return {"file": rows[0][0], "position": int(rows[0][1])}


def _files_between(engine: MariadbEngine, first: str, last: str) -> list[str]:
    names = [row[0] for row in engine.sql("SHOW BINARY LOGS")]
    if first not in names:
        raise Invalid(
            f"the binary log {first} of the previous backup is gone from the server "
            "(expired by binlog_expire_logs_seconds?); make a full backup"
        )
    return names[names.index(first) : names.index(last) + 1]


def extract(
    engine: MariadbEngine,
    staging: Path,
    start: dict[str, Any],
    end: dict[str, Any],
    recipients: list[str],
) -> Sealed:
    """Seal the binary-log events from ``start`` to ``end`` as replayable SQL text."""
    files = _files_between(engine, str(start["file"]), str(end["file"]))
    errors = staging / "binlog.err"
    with engine.defaults() as defaults, errors.open("w") as error_log:
        process = subprocess.Popen(  # noqa: S603 - fixed client and options
            [  # noqa: S607
                "mariadb-binlog",
                defaults,
                "--read-from-remote-server",
                # Only this database's events: a drill's scratch copy or another
                # application's database on the same server stays out of the backup.
                f"--database={engine.database}",
                f"--start-position={int(start['position'])}",
                f"--stop-position={int(end['position'])}",
                *files,
            ],
            stdout=subprocess.PIPE,
            stderr=error_log,
            env={**os.environ, "TZ": "UTC"},
        )
        sealed, code = seal_output(process, staging / ARTIFACT, recipients)
    if code != 0:
        raise CmschatError(f"backup: mariadb-binlog failed: {last_line(errors.read_text())}")
    return sealed


class Cut:
    """Passes SQL text through, stopping before the first transaction after ``until``."""

    def __init__(self, target: IO[bytes] | RewriteDb | _Tee, until: datetime | None) -> None:
        self.target = target
        self.until = until
        self.tail = b""
        self.cut = False

    def write(self, data: Any) -> int:
        size = len(data)
        if self.cut:
            return size
        lines = (self.tail + bytes(data)).split(b"\n")
        self.tail = lines.pop()
        passed = []
        for line in lines:
            if self.until is not None and self._after(line):
                self.cut = True
                break
            passed.append(line)
        if passed:
            self.target.write(b"\n".join(passed) + b"\n")
        if self.cut:
            self.target.write(_TRAILER)
        return size

    def _after(self, line: bytes) -> bool:
        found = _GTID.match(line)
        if not found or self.until is None:
            return False
        # The headers are UTC: the backup ran mariadb-binlog with TZ=UTC.
        started = datetime.strptime(found.group(1).decode() + " +0000", "%y%m%d %H:%M:%S %z")
        return started > self.until

    def close(self) -> None:
        if not self.cut and self.tail:
            self.target.write(self.tail)


class _SwapFinder:
    """Keeps nothing; notes a restore's swap in the (whole-line) text written to it."""

    found = False

    def write(self, data: Any) -> int:
        if _SWAP.search(bytes(data)):
            self.found = True
        return len(data)


class _Tee:
    """Writes the (whole-line) text to a file and to a ``_SwapFinder``."""

    def __init__(self, file: IO[bytes], finder: _SwapFinder) -> None:
        self.file = file
        self.finder = finder

    def write(self, data: Any) -> int:
        self.finder.write(data)
        return self.file.write(data)


def decrypt(
    source: Path,
    identity: pyrage.x25519.Identity,
    expected: Sealed,
    *,
    until: datetime | None,
    into: Path,
) -> tuple[bool, bool]:
    """Decrypt the artifact once into ``into``, plain SQL cut at ``until``; checks it too.

    Returns (cut, holds a restore). ``into`` must be in a private directory: it is the
    database's content. A restore logs DROP TABLE of every table and RENAME TABLE from
    its scratch database, gone since: replayed, the tables are dropped and the rename
    fails. Only a cmschat that did not start a new chain after a restore made such an
    incremental.
    """
    finder = _SwapFinder()
    with source.open("rb") as reader, into.open("xb") as writer:
        cut = Cut(_Tee(writer, finder), until)
        open_sealed(reader, cut, identity, name=ARTIFACT, expected=expected)
        cut.close()
    return cut.cut, finder.found


def replay_plain(engine: MariadbEngine, source: Path, *, made_on: str | None = None) -> None:
    """Redo the transactions of a log ``decrypt`` wrote (already cut).

    ``made_on``: the database the log was made from, when ``engine``'s has another name
    (a drill's scratch copy): every event is renamed on its way to the client.
    """
    errors = source.with_suffix(".err")

    def feed(stdin: IO[bytes]) -> None:
        rename = None
        if made_on is not None and made_on != engine.database:
            rename = RewriteDb(stdin, made_on, engine.database)
        with source.open("rb") as reader:
            while chunk := reader.read(1 << 20):
                (rename or stdin).write(chunk)
        if rename is not None:
            rename.close()

    with engine.defaults() as defaults:
        code = feed_client(["mariadb", defaults, engine.database], errors, feed)
    if code != 0:
        raise CmschatError(f"restore: replaying the binary log: {last_line(errors.read_text())}")
