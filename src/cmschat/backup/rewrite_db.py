"""Replaying an incremental into a database of another name (what drills need).

A binary log names its database in every event: ``use `db``` before statements, and,
with ``binlog_format=ROW``, inside each Table_map event that ``mariadb-binlog`` prints as
base64 in a ``BINLOG '…'`` statement. ``mariadb-binlog --rewrite-db`` can only rename at
extraction time; a drill renames at replay time, on the stored text: the ``use`` lines,
and the Table_map events (decoded, renamed, their size and CRC32 recomputed, encoded).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from typing import IO, Any

from cmschat.errors import CmschatError

_HEADER = 19  # timestamp, type, server id, event size, log position, flags
_TABLE_MAP = 19
_POST_HEADER = 8  # table id (6 bytes) and flags (2 bytes)
_USE = re.compile(rb"^use `((?:[^`]|``)+)`")


def rename_table_map(event: bytes, old: bytes, new: bytes) -> bytes:
    """A Table_map event naming ``new`` instead of ``old``; other events unchanged."""
    if len(event) < _HEADER + _POST_HEADER + 2 or event[4] != _TABLE_MAP:
        return event
    start = _HEADER + _POST_HEADER
    length = event[start]
    if event[start + 1 : start + 1 + length] != old:
        return event
    checked = zlib.crc32(event[:-4]) == struct.unpack("<I", event[-4:])[0]
    body = (
        event[:start]
        + bytes([len(new)])
        + new
        + event[start + 1 + length : len(event) - (4 if checked else 0)]
    )
    # The header holds the event's size; the CRC32 (if the log has them) covers it all.
    body = body[:9] + struct.pack("<I", len(body) + (4 if checked else 0)) + body[13:]
    return body + struct.pack("<I", zlib.crc32(body)) if checked else body


class RewriteDb:
    """Passes replayable binary-log text through, renaming database ``old`` to ``new``."""

    def __init__(self, target: IO[bytes] | Any, old: str, new: str) -> None:
        self.target = target
        self.old = old.encode()
        self.new = new.encode()
        self.tail = b""
        self.in_binlog = False
        self.pending: list[bytes] = []  # base64 lines of one event not yet complete

    def write(self, data: Any) -> int:
        """Rewrite whole lines; keep a partial last line for the next write."""
        lines = (self.tail + bytes(data)).split(b"\n")
        self.tail = lines.pop()
        out = [self._line(line) for line in lines]
        self.target.write(b"".join(part + b"\n" for part in out if part is not None))
        return len(data)

    def close(self) -> None:
        """Pass on a last line without a newline."""
        if self.tail:
            line = self._line(self.tail)
            if line is not None:
                self.target.write(line)
            self.tail = b""

    def _line(self, line: bytes) -> bytes | None:
        if self.in_binlog:
            if line.startswith(b"'"):
                self.in_binlog = False
                if self.pending:
                    raise CmschatError("drill: a binary-log event ends in the middle")
                return line
            return self._event_line(line)
        if line == b"BINLOG '":
            self.in_binlog = True
            return line
        if line.startswith(b"SET @binlog_fragment_"):
            # Only events larger than mariadb-binlog's fragment size (1 GiB by default)
            # are split like this; they cannot be renamed piecewise.
            raise CmschatError(
                "drill: the binary log has a fragmented event; drill the full backup"
            )
        found = _USE.match(line)
        if found and found.group(1) == self.old:
            return b"use `" + self.new + b"`" + line[found.end() :]
        return line

    def _event_line(self, line: bytes) -> bytes | None:
        # mariadb-binlog encodes each event on its own, wrapped at 76 characters: collect
        # lines until they decode to the event's full size, then rename and re-encode.
        self.pending.append(line)
        encoded = b"".join(part.strip() for part in self.pending)
        try:
            event = base64.b64decode(encoded, validate=True) if len(encoded) % 4 == 0 else b""
        except binascii.Error:
            event = b""
        if len(event) < _HEADER or len(event) < struct.unpack("<I", event[9:13])[0]:
            return None
        lines, self.pending = self.pending, []
        renamed = rename_table_map(event, self.old, self.new)
        return b"\n".join(lines) if renamed == event else base64.b64encode(renamed)
