"""Renaming a binary log's database on the way to a drill's scratch copy."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest

from cmschat.backup.rewrite_db import RewriteDb, rename_table_map
from cmschat.errors import CmschatError

# A Table_map event for `src`.`t` as mariadb-binlog 10.11 prints it (with its CRC32).
TABLE_MAP = base64.b64decode("gKsNaxMBAAAALgAAAAMDAAAAABIAAAAAAAEAA3NyYwABdAACAw8CFAACcduuUA==")
WRITE_ROWS = "gKsNaxcBAAAALwAAADIDAAAAABIAAAAAAAEAAgP8AQAAAAFh/AIAAAABYqOQEWc="


def test_a_table_map_event_is_renamed_with_its_size_and_checksum() -> None:
    renamed = rename_table_map(TABLE_MAP, b"src", b"cmschat_drill_0a1b2c3d")
    assert b"\x16cmschat_drill_0a1b2c3d\x00\x01t\x00" in renamed
    assert struct.unpack("<I", renamed[9:13])[0] == len(renamed) == len(TABLE_MAP) + 19
    assert struct.unpack("<I", renamed[-4:])[0] == zlib.crc32(renamed[:-4])
    assert rename_table_map(renamed, b"cmschat_drill_0a1b2c3d", b"src") == TABLE_MAP
    # Another database's event, and other kinds of event, pass unchanged.
    assert rename_table_map(TABLE_MAP, b"other", b"x") == TABLE_MAP
    rows = base64.b64decode(WRITE_ROWS)
    assert rename_table_map(rows, b"src", b"x") == rows


def test_the_text_is_renamed_whatever_the_chunks() -> None:
    text = (
        "use `src`/*!*/;\nuse `srcx`/*!*/;\nBINLOG '\n"
        + base64.b64encode(TABLE_MAP).decode()
        + "\n"
        + WRITE_ROWS
        + "\n'/*!*/;\nCOMMIT/*!*/;"
    ).encode()
    out = io.BytesIO()
    rewrite = RewriteDb(out, "src", "dst")
    for start in range(0, len(text), 5):
        rewrite.write(text[start : start + 5])
    rewrite.close()
    lines = out.getvalue().split(b"\n")
    assert lines[:3] == [b"use `dst`/*!*/;", b"use `srcx`/*!*/;", b"BINLOG '"]
    assert base64.b64decode(lines[3]) == rename_table_map(TABLE_MAP, b"src", b"dst")
    assert lines[4:] == [WRITE_ROWS.encode(), b"'/*!*/;", b"COMMIT/*!*/;"]


def test_a_fragmented_event_is_refused_not_replayed_unrenamed() -> None:
    rewrite = RewriteDb(io.BytesIO(), "src", "dst")
    with pytest.raises(CmschatError, match="fragmented"):
        rewrite.write(b"SET @binlog_fragment_0='AAAA'/*!*/;\n")
