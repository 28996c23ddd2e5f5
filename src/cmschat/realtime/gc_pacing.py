"""Full garbage collections paced by the open connections, not by Python's own count.

Once serving, Python's full collections are spaced out (``cli_server.GC_THRESHOLDS``): under
load its count of objects promoted to the oldest generation is mostly sends that were in
flight and died soon after, and each full collection walked every connection's objects.
What does need one is a closed connection: its objects form cycles that only a full
collection frees (3,000 idle connections closed left ~170,000 objects). So one runs whenever the
number of open connections has moved by a quarter since the last, or a quarter of them
have closed since (clients reconnecting around a steady number leave the same garbage
as a wave of closes): a ramp or churn pays for its own collections, each walking at most
a quarter more than the last, and a steady set of connections none (docs/performance.md,
"The server's full collections").
"""

from __future__ import annotations

import gc
from collections.abc import Callable

MINIMUM_CHANGE = 100
"""Fewer connections than this coming or going never calls for a collection."""


class FullCollections:
    """Collects the oldest generation when the connection count has moved by a quarter,
    or as many connections have closed."""

    def __init__(
        self, *, minimum: int = MINIMUM_CHANGE, collect: Callable[[], object] = gc.collect
    ) -> None:
        self.minimum = minimum
        self.collect = collect
        self.counted_at = 0
        """The number of connections at the last collection."""
        self.closed = 0
        """Connections closed since the last collection."""
        self._last = 0

    def counted(self, connections: int) -> None:
        """Note the number of open connections; collect if it moved far enough, or enough
        of them closed."""
        if connections < self._last:
            self.closed += self._last - connections
        self._last = connections
        bound = max(self.minimum, self.counted_at // 4)
        if abs(connections - self.counted_at) >= bound or self.closed >= bound:
            self.counted_at, self.closed = connections, 0
            self.collect()
