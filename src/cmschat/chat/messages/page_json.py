"""A history page read in one statement and written straight to JSON bytes.

On SQLite the database writes each message's JSON text itself (``page_sqlite``).

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
from sqlalchemy import Dialect, Select, bindparam, case, func, select

from cmschat.chat.messages import page_sqlite
from cmschat.chat.messages.rows import ATTACHMENT_FIELDS, ATTACHMENTS, MENTIONS, MESSAGES, USERS

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
    """The page's columns: on SQLite each message's seq and JSON text (``page_sqlite``);
    elsewhere the ids, the author, the stored tail and, for a row without one,
    ``rows.message_select``'s others (the update time NULL when it is the creation's,
    edited and deleted as 0 or 1) and each message's mentions and ready files. Its one
    parameter is ``ready`` (the ready state): the caller's come after it. ``cursor_of``
    reads a row's seq."""
    if dialect.name == "sqlite":
        return select(MESSAGES.c.seq, page_sqlite.item().label("item")).select_from(
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


def cursor_of(row: tuple[Any, ...], *, sqlite: bool) -> int:
    """The seq of a ``page_select`` row."""
    return int(row[0] if sqlite else row[2])


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
