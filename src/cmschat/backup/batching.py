"""Merging a dump's one-row INSERT lines into multi-row INSERTs on their way to the client.

Backups keep ``--skip-extended-insert`` (one ``INSERT INTO `t` VALUES (…);`` line per row,
which the manifest's row counts are read from), but a server parsing millions of one-row
statements makes restores slow. ``InsertBatcher`` sits between the decryptor and the
``mariadb`` client and joins consecutive row lines of the same table into one statement,
capped in bytes and rows. Any other line ends the batch first and passes unchanged, so the
statements run in the same order. Inside a ``DELIMITER`` block (trigger and routine
bodies) nothing is merged.
"""

from __future__ import annotations

import io
import re
from typing import IO, Any

MAX_BYTES = 1 << 20  # far below max_allowed_packet's default of 16 MiB
MAX_ROWS = 1000
# One whole row statement as mariadb-dump writes it: newlines in values are escaped, so a
# line with this head and a ``);`` end is one complete statement. A backtick inside a
# table name is doubled.
_HEAD = re.compile(rb"INSERT INTO `(?:[^`]|``)+` VALUES (?=\()")
_DELIMITER = b"DELIMITER "


class InsertBatcher(io.RawIOBase):
    """A writer that merges one-row INSERT lines into ``target``; call ``finish`` at the end.

    Chunks may split anywhere (inside a line or a UTF-8 character): only whole lines are
    looked at.
    """

    def __init__(
        self, target: IO[bytes] | Any, *, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS
    ) -> None:
        self.target = target
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.statements = 0
        self._tail = b""
        self._head = b""
        self._rows: list[bytes] = []
        self._size = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._plain_delimiter = True

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            self._line(line)
        if self._out_size >= self.max_bytes:
            self._drain()
        return len(chunk)

    def finish(self) -> None:
        """Write the pending batch and any last line without a newline."""
        if self._tail:
            self._flush()
            self._emit(self._tail)
            self._tail = b""
        self._flush()
        self._drain()

    def _line(self, line: bytes) -> None:
        if self._plain_delimiter and line.endswith(b");"):
            head = _HEAD.match(line)
            if head is not None:
                self._row(head.group(), line[head.end() : -1])
                return
        if line.startswith(_DELIMITER):
            self._plain_delimiter = line.rstrip() == b"DELIMITER ;"
        self._flush()
        self._emit(line + b"\n")

    def _row(self, head: bytes, row: bytes) -> None:
        if self._rows and (
            head != self._head
            or len(self._rows) >= self.max_rows
            or self._size + 1 + len(row) > self.max_bytes
        ):
            self._flush()
        if not self._rows:
            self._head = head
            self._size = len(head) + 2  # the ";\n"
        self._rows.append(row)
        self._size += len(row) + 1

    def _flush(self) -> None:
        if self._rows:
            self._emit(self._head + b",".join(self._rows) + b";\n")
            self.statements += 1
            self._rows = []

    def _emit(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def _drain(self) -> None:
        if self._out:
            self.target.write(b"".join(self._out))
            self._out = []
            self._out_size = 0
