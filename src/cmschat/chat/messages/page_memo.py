"""Messages already written as JSON, kept per process for the next page that shows them.

A page is mostly messages some earlier page wrote already. ``ItemMemo`` keeps each one's
bytes (all of ``MessageRead`` but its author) by message id with **every value of the row
they were written from**: id, room, seq, text, HTML, reply, mentions, files, the four
timestamps, and serves them only for a row with exactly those values. The bytes are a
function of those values alone, so nothing can make them stale: an
edit, a delete (moderation's included), a file turning ready or erased, a mention removed
by an erasure, a reply whose target retention purged, an operator's direct fix all change a
value, and the message is written again (its new version replacing the old). Nothing
relies on ``updated_at`` moving, nor on any event reaching this process. A purged
message's row is not read, so its bytes are never shown again and age out. The author is
left out of the values and the bytes (a renamed user shows at once): it is written per
page, once per author.

What it costs on a hit: a lookup by id and comparing the row's values with the kept ones
(the text by ``memcmp``; nothing is hashed but the id), against writing the text as JSON,
two or three timestamps, mentions and files. Memory is bounded by ``budget`` bytes, counted as the
text, the HTML and the written bytes plus a fixed overhead per entry; the least recently
used go first.
"""

from __future__ import annotations

from typing import Any

ENTRY_OVERHEAD = 400
"""Bytes counted per entry beyond its text and JSON: the key tuple, its small values,
the dict slot (measured about 350 with ``sys.getsizeof`` on CPython 3.11, rounded up)."""
BUDGET = 32 * 1024 * 1024
"""Bytes of written messages a process keeps: about 60,000 messages of 200 characters."""


Kept = tuple[tuple[Any, ...], bytes]
"""A message's row values (its author's left out) and its bytes after the author."""


class ItemMemo:
    """Written messages by id, each with the row values it was written from.

    Two generations instead of a strict LRU, so that a miss costs a dictionary store and
    a hit nothing at all: new entries go into ``young``; when ``young`` holds half the
    budget it becomes ``old`` (the previous ``old`` dropped) and a new ``young`` starts.
    A hit in ``old`` moves the entry back into ``young``. What is used at least once per
    half-budget of new entries stays; at most ``budget`` bytes are kept (counted as the
    text and the JSON plus ``ENTRY_OVERHEAD``). The writer reads both generations itself
    and stores with ``keep`` (no call per hit)."""

    def __init__(self, budget: int = BUDGET) -> None:
        self._half = budget // 2
        self.young: dict[int, Kept] = {}
        """By message id: what was written or used since the last turn."""
        self.old: dict[int, Kept] = {}
        """By message id: the generation before (read only: ``keep`` changes it)."""
        self._young_used = 0
        self._old_used = 0

    def tail(self, message_id: int, values: tuple[Any, ...]) -> bytes | None:
        """The bytes after the author written from exactly ``values`` for the message, if
        kept: another version of its row is a miss. (What the writer does inline.)"""
        found = self.young.get(message_id) or self.old.get(message_id)
        return None if found is None or found[0] != values else found[1]

    def keep(self, message_id: int, values: tuple[Any, ...], tail: bytes, text_size: int) -> None:
        """Keep the message's bytes after the author as written from ``values`` (in place
        of any older version of it); ``text_size``: the size of the text among them."""
        self.old.pop(message_id, None)
        size = len(tail) + text_size + ENTRY_OVERHEAD
        if size > self._half:
            self.young.pop(message_id, None)
            return
        self.young[message_id] = (values, tail)
        self._young_used += size
        if self._young_used > self._half:
            self.old, self.young = self.young, {}
            self._old_used, self._young_used = self._young_used, 0

    @property
    def used(self) -> int:
        """Bytes counted for the entries kept now (an entry replaced in ``young`` is
        counted until its generation is dropped)."""
        return self._young_used + self._old_used

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def clear(self) -> None:
        """Forget every entry."""
        self.young, self.old = {}, {}
        self._young_used = self._old_used = 0
