"""A message's stored history tail: its page item's bytes from ``"content":`` on.

The page writes each item's head (id, room, seq, author, from the row and the ``users``
join) and splices the tail a send without files stored in its own ``INSERT``
(``messages.page_tail``), so SQLite writes only the head of that row and a rename changes
nothing stored. The bytes are those ``page_json`` writes for the same row
(``tests/api/test_history_bytes.py``, ``tests/api/test_history_stored.py``): a new message
is not edited, not deleted and has no ready file yet; its stamps are the insert's own.
Triggers clear a tail whenever what it shows changes (migration 0010).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson


def ending(now: datetime) -> bytes:
    """The tail's last part for a message sent at ``now`` (the same for a whole batch): its
    stamps as the page writes the stored value, and a new message's flags and files."""
    stamp = orjson.dumps(now.astimezone(UTC), option=orjson.OPT_UTC_Z)
    return b'"created_at":%b,"updated_at":%b,"edited":false,"deleted":false,"attachments":[]}' % (
        stamp,
        stamp,
    )


def tail(
    content: bytes, html: bytes, reply_to: int | None, mentions: Iterable[int], last: bytes
) -> bytes:
    """The tail of a new message: ``content`` and ``html`` as JSON, the mentioned member ids,
    ``last`` from ``ending``. Joined, not %-formatted: about half the instructions."""
    return b"".join(
        (
            b'"content":',
            content,
            b',"content_html":',
            html,
            b',"reply_to":',
            b"null" if reply_to is None else b"%d" % reply_to,
            b',"mentions":',
            orjson.dumps(sorted(mentions)),
            b",",
            last,
        )
    )


def bound(value: bytes, *, sqlite: bool) -> str:
    """The tail as the message insert binds it: text on SQLite, hex for MariaDB's
    ``UNHEX(?)`` (asyncmy escapes a text holding a quote character by character; a hex
    string takes its fast path)."""
    return value.decode() if sqlite else value.hex()
