"""MariaDB: the rows of a history page without a stored tail, read by id after the page.

The page's statement (``page_json.page_select``) reads each message's head (ids, author)
and its stored tail (``page_tail``), nothing else. The few rows without a tail (edited,
deleted, with files, sent before tails were stored) are read here, by id, with what
their item is built from (its ready files joined, a row each); only when the page has
one. In the page's own statement those
columns (CASE-guarded, with correlated subqueries) cost mariadbd about 290 µs of its
~400 on every page, needed or not: MariaDB sets up each subquery's ``GROUP_CONCAT`` /
``JSON_ARRAYAGG`` temporary table whenever the statement runs, the ready files' one on
disk (its JSON values are too long for a memory table), evaluated for a row or not
(``bench/page_statements.py``, docs/performance.md).

Two reads, each its own snapshot (autocommit, ``READ COMMITTED``), and each row shown
whole as one of them saw it: a row with a tail in the page's read as that read saw it,
even if an edit cleared the tail since (the page a moment earlier); a row without one as
this read sees it, an edit or a deletion since included (a moment later); a row purged
(retention) in between is left out, as if purged before the page. Which rows the page
holds and its cursor are the page's read's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, bindparam, func, select

from cmschat.attachments.models import AttachmentState
from cmschat.chat.messages.rows import ATTACHMENT_FIELDS, ATTACHMENTS, MENTIONS, MESSAGES, USERS
from cmschat.db.driver_sql import BySize, Driver, Row, Statement

HEAD_COLUMNS = 7
"""A page row's columns (``page_json.page_select``): the head's six and the stored tail."""
_STAMP_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_HEAD = b'{"id":%d,"room_id":%d,"seq":%d,"author":%b,'
"""``_ITEM`` up to a stored tail (``page_tail``)."""
_ITEM = _HEAD + (
    b'"content":%b,"content_html":%b,"reply_to":%b,"mentions":%b,"created_at":%b,'
    b'"updated_at":%b,"edited":%b,"deleted":%b,"attachments":%b}'
)
"""``MessageRead``'s fields in its order."""
_BOOL = (b"false", b"true")


def _built(size: int) -> Select[Any]:
    """``size`` messages by id, a row per ready file (one without): the head, then
    ``rows.message_select``'s other columns (the update time NULL when it is the
    creation's, edited and deleted as 0 or 1), the mentions (``group_concat`` of the user
    ids) and the file's ``ATTACHMENT_FIELDS``. Parameters: ``ready`` (the ready state),
    the ids, then the page's room.

    The files are joined, not aggregated: a ``JSON_ARRAYAGG`` of them made MariaDB set up
    a temporary table on disk per execution (~300 µs and more of mariadbd's CPU)."""
    m, a, u = MESSAGES.c, ATTACHMENTS.c, USERS.c
    # MariaDB cuts GROUP_CONCAT at group_concat_max_len (1 MiB by default): far more ids
    # than a room has members.
    mentioned = (
        select(func.group_concat(MENTIONS.c.user_id))
        .where(MENTIONS.c.message_id == m.id)
        .scalar_subquery()
    )
    ready = and_(a.message_id == m.id, a.state == bindparam("ready"))
    # The driver makes a datetime per DATETIME value: an update time equal to the
    # creation's (most messages) comes as NULL.
    return (
        select(
            m.id,
            m.room_id,
            m.seq,
            m.author_id,
            u.username,
            u.display_name,
            m.content,
            m.content_html,
            m.reply_to_id,
            m.created_at,
            func.nullif(m.updated_at, m.created_at),
            m.edited_at.is_not(None),
            m.deleted_at.is_not(None),
            mentioned,
            *(a[name] for name in ATTACHMENT_FIELDS),
        )
        .select_from(MESSAGES.outerjoin(USERS, u.id == m.author_id).outerjoin(ATTACHMENTS, ready))
        .where(m.id.in_([bindparam(f"i{n}") for n in range(size)]))
        # The ids come from the page's own read; its room again, so that no caller can
        # ever be shown another room's message through them.
        .where(m.room_id == bindparam("room_id"))
    )


_MESSAGE_COLUMNS = 14
"""A ``_built`` row's columns before its file's."""


_BUILT = BySize(
    lambda size: Statement(
        lambda _dialect: _built(size), ["ready", *(f"i{n}" for n in range(size)), "room_id"]
    )
)


def ready_state(driver: Driver) -> Any:
    """The ready state (``AttachmentState.ready``) as ``driver`` takes it."""
    ready = _READY.get(driver.dialect.name)
    if ready is None:
        ready = _READY[driver.dialect.name] = driver.bound(
            ATTACHMENTS.c.state, AttachmentState.ready
        )
    return ready


_READY: dict[str, Any] = {}
"""The ready state as each kind of database's driver takes it, bound once (the column's
lookup and its type's processor were ~3.8 µs a page in timeit)."""


async def completed(driver: Driver, found: list[Row], *, ready: Any) -> list[Row]:
    """The page's rows in order, each without a stored tail replaced by its ``_built`` row
    (one statement more, only when there is one; a row gone since is left out)."""
    untailed = [row[0] for row in found if row[6] is None]
    if not untailed:
        return found
    built: dict[int, Row] = {}
    room_id = found[0][1]  # a page is one room's
    for row in await driver.rows(_BUILT(len(untailed)), (ready, *untailed, room_id)):
        message = built.get(row[0])
        if message is None:
            message = built[row[0]] = (*row[:_MESSAGE_COLUMNS], [])
        if row[_MESSAGE_COLUMNS] is not None:
            message[-1].append(row[_MESSAGE_COLUMNS:])
    return [
        row if row[6] is not None else built[row[0]]
        for row in found
        if row[6] is not None or row[0] in built
    ]


def _stamp(value: datetime) -> bytes:
    # The driver's naive UTC datetime, as jsonbytes writes the aware one.
    return orjson.dumps(value, option=_STAMP_OPTIONS)


def _mentions(found: str | bytes) -> bytes:
    """``[ids]`` from ``group_concat``'s text (bytes on MariaDB), in ascending order."""
    text = found.decode() if isinstance(found, bytes) else found
    if "," in text:
        text = ",".join(sorted(text.split(","), key=int))
    return b"[%b]" % text.encode()


def _files(found: list[Row]) -> bytes:
    """The ``AttachmentRead`` objects of the files' ``ATTACHMENT_FIELDS`` values, by id."""
    shapes = []
    for values in sorted(found):
        shape = dict(zip(ATTACHMENT_FIELDS, values, strict=True))
        shape["is_image"] = bool(shape["is_image"])
        shapes.append(shape)
    return orjson.dumps(shapes)


def items(rows: Sequence[Row]) -> bytes:
    """The page's items, joined: of ``completed``'s rows, a page row's head and stored
    tail, or a built row's (``_built``'s, its files gathered) item written here with one
    fixed bytes template, no dict."""
    dumps = orjson.dumps
    authors: dict[int, bytes] = {}
    written: list[bytes] = []
    for row in rows:
        message_id, room_id, seq, author_id, username, display_name = row[:6]
        if username is None:
            author = b"null"
        else:
            author = authors.get(author_id)  # type: ignore[assignment]
            if author is None:
                shown = {"id": author_id, "username": username, "display_name": display_name}
                author = authors[author_id] = dumps(shown)
        if len(row) == HEAD_COLUMNS:
            written.append(_HEAD % (message_id, room_id, seq, author) + row[6].encode())
            continue
        content, html, reply_to_id, created_at, updated_at, edited, deleted, mentioned, files = row[
            6:
        ]
        created = _stamp(created_at)
        written.append(
            _ITEM
            % (
                message_id,
                room_id,
                seq,
                author,
                dumps(content),
                dumps(html),
                b"null" if reply_to_id is None else b"%d" % reply_to_id,
                b"[]" if mentioned is None else _mentions(mentioned),
                created,
                created if updated_at is None else _stamp(updated_at),
                _BOOL[edited],
                _BOOL[deleted],
                _files(files) if files else b"[]",
            )
        )
    return b",".join(written)
