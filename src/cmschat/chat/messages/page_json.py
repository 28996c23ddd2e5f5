"""A history page read in one statement and written straight to JSON bytes.

The page's statement brings each message with its author, its mentions (``group_concat``
of the user ids) and its ready files (a JSON array of arrays, ``json_group_array`` on
SQLite, ``JSON_ARRAYAGG`` on MariaDB) as correlated subqueries: one trip for the whole
page instead of three. Its rows are written with a fixed key template, one bytes format
per message, no dict per row and no datetime object for SQLite's text timestamps.

The bytes are those ``jsonbytes.dumps`` writes for the ``MessageRead``-shaped dicts of
``rows.message_dicts`` (same keys in the same order, UTC as ``Z``, microseconds only when
not zero, non-ASCII as UTF-8): ``tests/api/test_history_bytes.py`` holds them to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Dialect, Select, bindparam, func, select

from cmschat.chat.messages.rows import (
    ATTACHMENT_FIELDS,
    ATTACHMENTS,
    MENTIONS,
    MESSAGES,
    message_select,
)

_STAMP_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_ITEM = (
    b'{"id":%d,"room_id":%d,"seq":%d,"author":%b,"content":%b,"content_html":%b,'
    b'"reply_to":%b,"mentions":%b,"created_at":%b,"updated_at":%b,"edited":%b,'
    b'"deleted":%b,"attachments":%b}'
)
"""``MessageRead``'s fields in its order."""
_BOOL = (b"false", b"true")


def page_select(dialect: Dialect) -> Select[Any]:
    """``rows.message_select`` and, after its columns, each message's mentions and ready
    files. Its one parameter is ``ready`` (the ready state): the caller's come after it."""
    m, a = MESSAGES.c, ATTACHMENTS.c
    mentioned = (
        select(func.group_concat(MENTIONS.c.user_id))
        .where(MENTIONS.c.message_id == m.id)
        .scalar_subquery()
    )
    # MariaDB cuts GROUP_CONCAT and JSON_ARRAYAGG at group_concat_max_len (1 MiB by
    # default): a message has at most 10 files (schemas.AttachmentIds), a few KiB.
    values = func.json_array(*(a[name] for name in ATTACHMENT_FIELDS))
    aggregate = func.json_group_array if dialect.name == "sqlite" else func.json_arrayagg
    files = (
        select(aggregate(values))
        .where(a.message_id == m.id, a.state == bindparam("ready"))
        .scalar_subquery()
    )
    return message_select().add_columns(mentioned, files)


def _sqlite_stamp(text: str) -> bytes:
    # SQLAlchemy's SQLite DATETIME text, naive UTC: "YYYY-MM-DD HH:MM:SS.ffffff".
    if len(text) == 26 and text[10] == " ":
        clock = text[11:19] if text.endswith(".000000") else text[11:]
        return f'"{text[:10]}T{clock}Z"'.encode()
    return _stamp(datetime.fromisoformat(text))


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
    stamp: Callable[[Any], bytes] = _sqlite_stamp if sqlite else _stamp
    dumps = orjson.dumps
    authors: dict[int, bytes] = {}
    items = []
    for (
        message_id,
        room_id,
        seq,
        author_id,
        username,
        display_name,
        content,
        content_html,
        reply_to_id,
        created_at,
        updated_at,
        edited_at,
        deleted_at,
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
        created = stamp(created_at)
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
                created if updated_at == created_at else stamp(updated_at),
                _BOOL[edited_at is not None],
                _BOOL[deleted_at is not None],
                b"[]" if files is None or files == "[]" else _files(files),
            )
        )
    cursor = b"null" if next_cursor is None else b"%d" % next_cursor
    return b'{"items":[%b],"next_cursor":%b}' % (b",".join(items), cursor)
