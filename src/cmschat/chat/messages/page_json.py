"""A history page read and written straight to JSON bytes.

On SQLite the database writes each message's JSON text itself (``page_sqlite``).

MariaDB's ``JSON_OBJECT`` writes ``": "`` and ``", "`` and upper-case hex escapes, so
there the statement brings each message's head (ids and author) and its stored tail, and
the rows without a tail are read by id after it and written in Python (``page_built``).

The bytes are those ``jsonbytes.dumps`` writes for the ``MessageRead``-shaped dicts of
``rows.message_dicts`` (same keys in the same order, UTC as ``Z``, microseconds only when
not zero, non-ASCII as UTF-8): ``tests/api/test_history_bytes.py`` holds them to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect, Select, select

from cmschat.chat.messages import page_built, page_sqlite
from cmschat.chat.messages.rows import MESSAGES, USERS


def page_select(dialect: Dialect) -> Select[Any]:
    """The page's columns: on SQLite each message's seq and JSON text (``page_sqlite``),
    with one parameter, ``ready`` (the ready state), before the caller's; elsewhere the
    ids, the author and the stored tail (``page_built`` reads the rows without one), no
    parameter of its own. ``cursor_of`` reads a row's seq."""
    if dialect.name == "sqlite":
        return select(MESSAGES.c.seq, page_sqlite.item().label("item")).select_from(
            MESSAGES.outerjoin(USERS, USERS.c.id == MESSAGES.c.author_id)
        )
    m, u = MESSAGES.c, USERS.c
    return select(
        m.id, m.room_id, m.seq, m.author_id, u.username, u.display_name, m.page_tail
    ).select_from(MESSAGES.outerjoin(USERS, u.id == m.author_id))


def cursor_of(row: tuple[Any, ...], *, sqlite: bool) -> int:
    """The seq of a ``page_select`` row."""
    return int(row[0] if sqlite else row[2])


def page_bytes(rows: Sequence[tuple[Any, ...]], next_cursor: int | None, *, sqlite: bool) -> bytes:
    """``{"items": [...], "next_cursor": ...}`` of ``page_select`` rows read with the driver
    (on MariaDB, ``page_built.completed``'s)."""
    cursor = b"null" if next_cursor is None else b"%d" % next_cursor
    texts = ",".join([row[1] for row in rows]).encode() if sqlite else page_built.items(rows)
    return b'{"items":[%b],"next_cursor":%b}' % (texts, cursor)
