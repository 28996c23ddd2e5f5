"""Messages already written as JSON, kept per process for the next page that shows them.

A page is mostly messages some earlier page wrote already. ``ItemMemo`` keeps each one's
bytes (all of ``MessageRead`` but its author) under the key of **every value of the row
they were written from**: id, room, seq, text, HTML, reply, mentions, files, the four
timestamps. The bytes are a function of that key alone, so nothing can make them stale: an
edit, a delete (moderation's included), a file turning ready or erased, a mention removed
by an erasure, a reply whose target retention purged, an operator's direct fix all change a
value, hence the key, and the message is written again. Nothing relies on ``updated_at``
moving, nor on any event reaching this process. A purged message's row is not read, so its
bytes are never shown again and age out. The author is left out of the key and the bytes
(a renamed user shows at once): it is written per page, once per author.

What it costs on a hit: hashing the row's text (the driver's strings are new each read)
and comparing it with the kept key's, against writing the text as JSON, two or three
timestamps, mentions and files. Memory is bounded by ``budget`` bytes, counted as the
text, the HTML and the written bytes plus a fixed overhead per entry; the least recently
used go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

ENTRY_OVERHEAD = 400
"""Bytes counted per entry beyond its text and JSON: the key tuple, its small values,
the dict slot (measured about 350 with ``sys.getsizeof`` on CPython 3.11, rounded up)."""
BUDGET = 32 * 1024 * 1024
"""Bytes of written messages a process keeps: about 60,000 messages of 200 characters."""


class ItemMemo:
    """Written messages by their row's values, least recently used first out."""

    def __init__(self, budget: int = BUDGET) -> None:
        self._budget = budget
        self._used = 0
        self._items: OrderedDict[Hashable, tuple[bytes, bytes, int]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bytes, bytes] | None:
        """The head (up to the author) and tail (after it) written for ``key``, if kept."""
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0], found[1]

    def put(self, key: Hashable, head: bytes, tail: bytes, text_size: int) -> None:
        """Keep ``head`` and ``tail`` for ``key``; ``text_size``: the key's text, in bytes."""
        size = len(head) + len(tail) + text_size + ENTRY_OVERHEAD
        if size > self._budget:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._used -= old[2]
        self._items[key] = (head, tail, size)
        self._used += size
        while self._used > self._budget:
            self._used -= self._items.popitem(last=False)[1][2]

    @property
    def used(self) -> int:
        """Bytes counted for the entries kept now."""
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget every entry."""
        self._items.clear()
        self._used = 0
