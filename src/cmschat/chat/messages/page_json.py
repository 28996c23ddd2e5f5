"""A history page read in one statement and written straight to JSON bytes.

On SQLite the database writes each message's JSON text itself (``printf`` of a fixed
key template, ``json_quote`` for the texts, its author, mentions and ready files as
nested JSON text, its timestamps in the ``…Z`` form): a row is the message's seq and its
text, and Python only joins them. The driver then makes two Python objects per row, not
fifteen, and no Python code runs per row. SQLite escapes a JSON string as orjson does (a
quote and a backslash with a backslash, the five short escapes of control characters,
six-character lower-case hex escapes for the others, everything else as UTF-8).

MariaDB's ``JSON_OBJECT`` writes ``": "`` and ``", "`` and upper-case hex escapes, so
there the statement brings each message with its author, its mentions (``group_concat``
of the user ids) and its ready files (``JSON_ARRAYAGG`` of value arrays) as correlated
subqueries, one trip for the whole page, and its rows are written here with one fixed
bytes template per message, no dict per row.

The bytes are those ``jsonbytes.dumps`` writes for the ``MessageRead``-shaped dicts of
``rows.message_dicts`` (same keys in the same order, UTC as ``Z``, microseconds only when
not zero, non-ASCII as UTF-8): ``tests/api/test_history_bytes.py`` holds them to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Dialect, Select, bindparam, case, func, literal_column, select

from cmschat.chat.messages.rows import (
    ATTACHMENT_FIELDS,
    ATTACHMENTS,
    MENTIONS,
    MESSAGES,
    USERS,
)

_STAMP_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_HEAD = b'{"id":%d,"room_id":%d,"seq":%d,"author":%b,'
"""``_ITEM`` up to a stored tail (``page_tail``)."""
_ITEM = _HEAD + (
    b'"content":%b,"content_html":%b,"reply_to":%b,"mentions":%b,"created_at":%b,'
    b'"updated_at":%b,"edited":%b,"deleted":%b,"attachments":%b}'
)
"""``MessageRead``'s fields in its order."""
_BOOL = (b"false", b"true")


def page_select(dialect: Dialect) -> Select[Any]:
    """The page's columns: on SQLite each message's seq and JSON text (``_sqlite_item``);
    elsewhere the ids, the author, the stored tail and, for a row without one,
    ``rows.message_select``'s others (the update time NULL when it is the creation's,
    edited and deleted as 0 or 1) and each message's mentions and ready files. Its one
    parameter is ``ready`` (the ready state): the caller's come after it. ``cursor_of``
    reads a row's seq."""
    if dialect.name == "sqlite":
        return select(MESSAGES.c.seq, _sqlite_item().label("item")).select_from(
            MESSAGES.outerjoin(USERS, USERS.c.id == MESSAGES.c.author_id)
        )
    m, a = MESSAGES.c, ATTACHMENTS.c
    mentioned = (
        select(func.group_concat(MENTIONS.c.user_id))
        .where(MENTIONS.c.message_id == m.id)
        .scalar_subquery()
    )
    # MariaDB cuts GROUP_CONCAT and JSON_ARRAYAGG at group_concat_max_len (1 MiB by
    # default): a message has at most 10 files (schemas.AttachmentIds), a few KiB.
    values = func.json_array(*(a[name] for name in ATTACHMENT_FIELDS))
    files = (
        select(func.json_arrayagg(values))
        .where(a.message_id == m.id, a.state == bindparam("ready"))
        .scalar_subquery()
    )
    # The driver makes a datetime per DATETIME value: an update time equal to the
    # creation's (most messages) comes as NULL, edited and deleted as 0 or 1.
    built = (
        m.content,
        m.content_html,
        m.reply_to_id,
        m.created_at,
        func.nullif(m.updated_at, m.created_at),
        m.edited_at.is_not(None),
        m.deleted_at.is_not(None),
        mentioned,
        files,
    )
    # A row with a stored tail needs none of them: neither read and converted by the
    # driver nor, for the subqueries, run.
    stored = m.page_tail.is_not(None)
    u = USERS.c
    return select(
        m.id,
        m.room_id,
        m.seq,
        m.author_id,
        u.username,
        u.display_name,
        m.page_tail,
        *(case((stored, None), else_=column) for column in built),
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


def _stamp(value: datetime) -> bytes:
    # The driver's naive UTC datetime (MariaDB), as jsonbytes writes the aware one.
    return orjson.dumps(value, option=_STAMP_OPTIONS)


def _mentions(found: str | bytes) -> bytes:
    """``[ids]`` from ``group_concat``'s text (bytes on MariaDB), in ascending order."""
    text = found.decode() if isinstance(found, bytes) else found
    if "," in text:
        text = ",".join(sorted(text.split(","), key=int))
    return b"[%b]" % text.encode()


def _files(found: str | bytes) -> bytes:
    """The ``AttachmentRead`` objects of the JSON array of value arrays, by id."""
    shapes = []
    for values in sorted(orjson.loads(found)):
        shape = dict(zip(ATTACHMENT_FIELDS, values, strict=True))
        shape["is_image"] = bool(shape["is_image"])
        shapes.append(shape)
    return orjson.dumps(shapes)


def page_bytes(rows: Sequence[tuple[Any, ...]], next_cursor: int | None, *, sqlite: bool) -> bytes:
    """``{"items": [...], "next_cursor": ...}`` of ``page_select`` rows read with the driver."""
    cursor = b"null" if next_cursor is None else b"%d" % next_cursor
    if sqlite:
        texts = ",".join([row[1] for row in rows]).encode()
        return b'{"items":[%b],"next_cursor":%b}' % (texts, cursor)
    dumps = orjson.dumps
    authors: dict[int, bytes] = {}
    items: list[bytes] = []
    for (
        message_id,
        room_id,
        seq,
        author_id,
        username,
        display_name,
        tail,
        content,
        content_html,
        reply_to_id,
        created_at,
        updated_at,
        edited,
        deleted,
        mentioned,
        files,
    ) in rows:
        if username is None:
            author = b"null"
        else:
            author = authors.get(author_id)  # type: ignore[assignment]
            if author is None:
                shown = {"id": author_id, "username": username, "display_name": display_name}
                author = authors[author_id] = dumps(shown)
        if tail is not None:
            items.append(_HEAD % (message_id, room_id, seq, author) + tail.encode())
            continue
        created = _stamp(created_at)
        items.append(
            _ITEM
            % (
                message_id,
                room_id,
                seq,
                author,
                dumps(content),
                dumps(content_html),
                b"null" if reply_to_id is None else b"%d" % reply_to_id,
                b"[]" if mentioned is None else _mentions(mentioned),
                created,
                created if updated_at is None else _stamp(updated_at),
                _BOOL[edited],
                _BOOL[deleted],
                b"[]" if files is None or files == "[]" else _files(files),
            )
        )
    return b'{"items":[%b],"next_cursor":%b}' % (b",".join(items), cursor)
