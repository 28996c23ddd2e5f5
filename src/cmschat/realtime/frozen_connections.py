"""The open connections' objects frozen out of the garbage collector's sight.

Each connection keeps ~100-120 tracked objects, so with 1,000 connected every full
collection walked ~120,000 of them (57-123 ms of loop CPU, nothing collected). Under 1,000
sends a second Python ran one every ~4 s: each middle collection moves the objects of the
sends then in flight to the oldest generation, where they soon die by reference counting,
but Python counts the moves, not the deaths, and collects everything once they reach a
quarter of what the last full collection left (docs/performance.md, "The server's full
collections"). Raising Python's thresholds instead was reverted (the overload test's
recovery looked worse with it); an overload's cyclic garbage is freed by young and middle
collections, which this leaves as they are.

So the thresholds stay, and what a full collection walks shrinks: once connections have
opened (a quarter more than at the last freeze, or any, once the count has been still for
``SETTLE_SECONDS``), what is not frozen is collected and its survivors frozen; later full
collections walk only what was made since. A closed connection's objects are cycles that
only a collection of them frees, so once the connections closed could account for a
quarter of the frozen objects (the startup's included), everything is thawed, collected
and frozen again: Python's own rule for a full collection (a quarter of the oldest
generation new since the last), counted in closed connections, not in promoted sends.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Protocol

MINIMUM = 100
"""Fewer connections than this opened or closed never calls for a freeze or a thaw."""
SETTLE_SECONDS = 5.0
"""A still count for this long freezes the connections opened since the last freeze."""
PER_CONNECTION = 100
"""Tracked objects an open connection keeps (~100 frozen a connection under ws_load)."""


class Timer(Protocol):
    """What ``loop.call_later`` returns, as far as this module uses it."""

    def cancel(self) -> None:
        """Do not run it."""


def freeze() -> None:
    """Collect what is not frozen, then freeze what survived (walks only the unfrozen)."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Collect everything, closed connections' cycles included, then freeze it again."""
    gc.unfreeze()
    freeze()


class FrozenConnections:
    """Told the number of open connections whenever it changes; freezes and thaws."""

    def __init__(
        self,
        *,
        minimum: int = MINIMUM,
        settle: float = SETTLE_SECONDS,
        later: Callable[[float, Callable[[], None]], Timer] | None = None,
        freeze: Callable[[], None] = freeze,
        thaw: Callable[[], None] = thaw,
        frozen_objects: Callable[[], int] = gc.get_freeze_count,
    ) -> None:
        self.minimum = minimum
        self.settle = settle
        self._later = later
        self._freeze = freeze
        self._thaw = thaw
        self._frozen_objects = frozen_objects
        self.frozen_at = 0
        """The number of connections at the last freeze (or thaw)."""
        self.opened = 0
        """Connections opened since the last freeze: their objects are walked."""
        self.closed = 0
        """Connections closed since the last thaw: their cycles are frozen garbage."""
        self.closed_bound = minimum
        """Closes that call for a thaw: a quarter of the frozen objects' worth."""
        self._count = 0
        self._settling: Timer | None = None

    def counted(self, connections: int) -> None:
        """Note the number of open connections; freeze or thaw if enough moved."""
        if connections > self._count:
            self.opened += connections - self._count
        else:
            self.closed += self._count - connections
        self._count = connections
        if self.closed >= self.closed_bound:
            self._thaw()
            self.closed = 0
            self._frozen()
        elif self.opened >= max(self.minimum, self.frozen_at // 4):
            self._freeze()
            self._frozen()
        elif self.opened:
            self._settle_later()

    def settled(self) -> None:
        """The count has been still: freeze the connections opened since the last freeze."""
        self._settling = None
        if self.opened:
            self._freeze()
            self._frozen()

    def _frozen(self) -> None:
        self.frozen_at, self.opened = self._count, 0
        # Counting the frozen objects walks their list (~1 ms for 300,000): once a freeze.
        self.closed_bound = max(self.minimum, self._frozen_objects() // (4 * PER_CONNECTION))
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None

    def _settle_later(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
        later = self._later or asyncio.get_running_loop().call_later
        self._settling = later(self.settle, self.settled)
