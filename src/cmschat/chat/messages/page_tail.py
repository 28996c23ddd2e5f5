"""A message's stored history tail: its page item's bytes from ``"content":`` on.

The page writes each item's head (id, room, seq, author, from the row and the ``users``
join) and splices the tail a send without files stored in its own ``INSERT``
(``messages.page_tail``), so SQLite writes no JSON for that row and a rename changes
nothing stored. The bytes are those ``page_json`` writes for the same row
(``tests/api/test_history_bytes.py``, ``tests/api/test_history_stored.py``): a new message
is not edited, not deleted and has no ready file yet; its stamps are the insert's own.
Triggers clear a tail whenever what it shows changes (migration 0010).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

_TAIL = (
    b'"content":%b,"content_html":%b,"reply_to":%b,"mentions":[%b],"created_at":%b,'
    b'"updated_at":%b,"edited":false,"deleted":false,"attachments":[]}'
)
"""``page_json._ITEM`` from ``"content"`` on, for a message as its send stores it."""


def stamp(now: datetime) -> bytes:
    """The JSON of a send's creation and update time, as the page writes the stored value."""
    return orjson.dumps(now.astimezone(UTC), option=orjson.OPT_UTC_Z)


def tail(
    content: bytes, html: bytes, reply_to: int | None, mentions: Iterable[int], stamped: bytes
) -> bytes:
    """The tail of a new message: ``content`` and ``html`` as JSON, the mentioned member ids,
    ``stamped`` from ``stamp``."""
    return _TAIL % (
        content,
        html,
        b"null" if reply_to is None else b"%d" % reply_to,
        b",".join([b"%d" % user_id for user_id in sorted(mentions)]),
        stamped,
        stamped,
    )


def bound(value: bytes, *, sqlite: bool) -> str:
    """The tail as the message insert binds it: text on SQLite, hex for MariaDB's
    ``UNHEX(?)`` (asyncmy escapes a text holding a quote character by character; a hex
    string takes its fast path)."""
    return value.decode() if sqlite else value.hex()
