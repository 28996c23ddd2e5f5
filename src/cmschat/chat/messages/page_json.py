"""A history page read and written straight to JSON bytes.

On SQLite the database writes each message's JSON text itself (``printf`` of a fixed
key template, ``json_quote`` for the texts, its author, mentions and ready files as
nested JSON text, its timestamps in the ``…Z`` form): a row is the message's seq and its
text, and Python only joins them. The driver then makes two Python objects per row, not
fifteen, and no Python code runs per row. SQLite escapes a JSON string as orjson does (a
quote and a backslash with a backslash, the five short escapes of control characters,
six-character lower-case hex escapes for the others, everything else as UTF-8).

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

from sqlalchemy import ColumnElement, Dialect, Select, bindparam, case, func, literal_column, select

from cmschat.chat.messages import page_built
from cmschat.chat.messages.rows import (
    ATTACHMENT_FIELDS,
    ATTACHMENTS,
    MENTIONS,
    MESSAGES,
    USERS,
)


def page_select(dialect: Dialect) -> Select[Any]:
    """The page's columns: on SQLite each message's seq and JSON text (``_sqlite_item``),
    with one parameter, ``ready`` (the ready state), before the caller's; elsewhere the
    ids, the author and the stored tail (``page_built`` reads the rows without one), no
    parameter of its own. ``cursor_of`` reads a row's seq."""
    if dialect.name == "sqlite":
        return select(MESSAGES.c.seq, _sqlite_item().label("item")).select_from(
            MESSAGES.outerjoin(USERS, USERS.c.id == MESSAGES.c.author_id)
        )
    m, u = MESSAGES.c, USERS.c
    return select(
        m.id, m.room_id, m.seq, m.author_id, u.username, u.display_name, m.page_tail
    ).select_from(MESSAGES.outerjoin(USERS, u.id == m.author_id))


def sqlite_older_page(rows: Select[Any]) -> Select[Any]:
    """SQLite: a page of ``page_select``'s ``rows`` (the room's, newest first, at most the
    page's size; the newest page or one before a cursor) as one row: how many, the oldest
    one's seq, whether the room has older messages, and the items joined.

    Python's ``sqlite3`` lets go of the interpreter lock around every step of a statement,
    a row at a time: a page of 51 rows took it back 52 times from the event loop, and under
    load those handoffs cost the page more CPU in the kernel (futex) than the page's own
    reading did. One row takes it back twice. ``group_concat`` joins the rows in the
    subquery's order (SQLite does not flatten a subquery with a ``LIMIT`` into an
    aggregate); ``tests/api/test_history_bytes.py`` holds the bytes to the rows' own."""
    m = MESSAGES.c
    page = rows.add_columns(m.room_id).subquery("page")
    summed = select(
        func.count().label("shown"),
        func.min(page.c.seq).label("last"),
        func.max(page.c.room_id).label("room_id"),
        func.group_concat(page.c.item, literal_column("','")).label("joined"),
    ).subquery("summed")
    beyond = MESSAGES.alias("beyond")
    more = (
        select(beyond.c.id)
        .where(beyond.c.room_id == summed.c.room_id, beyond.c.seq < summed.c.last)
        .exists()
    )
    return select(summed.c.shown, summed.c.last, more.label("more"), summed.c.joined)


def sqlite_older_page_bytes(row: tuple[Any, ...]) -> bytes:
    """``{"items": [...], "next_cursor": ...}`` of ``sqlite_older_page``'s row."""
    shown, last, more, items = row
    cursor = b"%d" % last if shown and more else b"null"
    return b'{"items":[%b],"next_cursor":%b}' % (items.encode() if shown else b"", cursor)


def cursor_of(row: tuple[Any, ...], *, sqlite: bool) -> int:
    """The seq of a ``page_select`` row."""
    return int(row[0] if sqlite else row[2])


_SQLITE_HEAD = '{"id":%d,"room_id":%d,"seq":%d,"author":%s,'
_SQLITE_TAIL = (
    '"content":%s,"content_html":%s,"reply_to":%s,"mentions":%s,"created_at":"%sZ",'
    '"updated_at":"%sZ","edited":%s,"deleted":%s,"attachments":%s}'
)
"""``_ITEM`` as SQLite's ``printf`` formats: the same keys in the same order, split where
a stored tail (``page_tail``) begins."""


_FILE_VALUES = tuple(name for name in ATTACHMENT_FIELDS if name != "is_image")


def _text(value: str) -> ColumnElement[Any]:
    # Inlined, not bound: the statement's parameters stay the caller's.
    return literal_column("'" + value.replace("'", "''") + "'")


def _whether(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return case((condition, _text("true")), else_=_text("false"))


def _sqlite_z(stamp: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQLAlchemy's SQLite DATETIME text (``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC) as
    jsonbytes writes the datetime, less its ``Z``: a ``T``, the microseconds only when
    not zero (``.000000`` can only be the fraction)."""
    return func.replace(func.replace(stamp, _text(" "), _text("T")), _text(".000000"), _text(""))


def _listed(column: ColumnElement[Any], rows: Any) -> ColumnElement[Any]:
    """``[…]`` of ``column``'s values over the subquery ``rows``, in its order; ``[]``."""
    joined = _text("[").concat(func.group_concat(column)).concat(_text("]"))
    return func.coalesce(select(joined).select_from(rows).scalar_subquery(), _text("[]"))


def _sqlite_item() -> ColumnElement[Any]:
    """A message as ``MessageRead``'s JSON text, written by SQLite: the head from the row
    and its author, then the stored tail or, without one, the tail written here.

    Text all the way (``printf``, ``group_concat``): nothing relies on SQLite keeping a
    value's JSON subtype through a subquery or a ``CASE``, and nothing is parsed again."""
    m, u = MESSAGES.c, USERS.c
    shown: tuple[ColumnElement[Any], ...] = (_text("id"), u.id, _text("username"), u.username)
    shown += (_text("display_name"), u.display_name)
    head = func.printf(
        _text(_SQLITE_HEAD),
        m.id,
        m.room_id,
        m.seq,
        case((u.id.is_(None), _text("null")), else_=func.json_object(*shown)),
    )
    # SQLite evaluates COALESCE's second argument, its subqueries too, only for a row
    # without a stored tail.
    return head.concat(func.coalesce(m.page_tail, _sqlite_tail()))


def _sqlite_tail() -> ColumnElement[Any]:
    """A message's item from ``"content"`` on, written by SQLite."""
    m, a = MESSAGES.c, ATTACHMENTS.c
    # Correlated by hand: these sit in a subquery's FROM, which SQLAlchemy leaves alone.
    # Ordered there, so group_concat joins them in that order.
    mentioned = (
        select(MENTIONS.c.user_id.label("user_id"))
        .where(MENTIONS.c.message_id == m.id)
        .correlate(MESSAGES)
        .order_by(MENTIONS.c.user_id)
        .subquery()
    )
    file = func.json_object(
        *(part for name in _FILE_VALUES for part in (_text(name), a[name])),
        _text("is_image"),
        func.json(_whether(a.is_image.is_(True))),
    )
    ready = (
        select(file.label("file"))
        .where(a.message_id == m.id, a.state == bindparam("ready"))
        .correlate(MESSAGES)
        .order_by(a.id)
        .subquery()
    )
    return func.printf(
        _text(_SQLITE_TAIL),
        func.json_quote(m.content),
        func.json_quote(m.content_html),
        func.coalesce(m.reply_to_id, _text("null")),
        _listed(mentioned.c.user_id, mentioned),
        _sqlite_z(m.created_at),
        _sqlite_z(m.updated_at),
        _whether(m.edited_at.is_not(None)),
        _whether(m.deleted_at.is_not(None)),
        _listed(ready.c.file, ready),
    )


def page_bytes(rows: Sequence[tuple[Any, ...]], next_cursor: int | None, *, sqlite: bool) -> bytes:
    """``{"items": [...], "next_cursor": ...}`` of ``page_select`` rows read with the driver
    (on MariaDB, ``page_built.completed``'s)."""
    cursor = b"null" if next_cursor is None else b"%d" % next_cursor
    texts = ",".join([row[1] for row in rows]).encode() if sqlite else page_built.items(rows)
    return b'{"items":[%b],"next_cursor":%b}' % (texts, cursor)
