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

Only closes of connections frozen since they opened count (a connection remembers how many
freezes had run when it opened): an unfrozen one's cycles are freed by ordinary collections,
and probes or reconnect churn must not cost a thaw of the startup's ~200,000 objects. A thaw
takes hundreds of milliseconds of loop, so it never runs in the close (``Hub.remove``): it
waits until the count has been still for ``SETTLE_SECONDS``, so a wave of closes costs one,
unless the frozen garbage reaches the frozen objects' worth (churn that is never still),
then it runs in the next loop callback. A draining server neither thaws nor freezes: its
connections are all closing and the process is about to end.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cmschat.realtime.connections import Connection

MINIMUM = 100
"""Fewer connections than this opened or closed never calls for a freeze or a thaw."""
SETTLE_SECONDS = 5.0
"""A still count for this long freezes the connections opened since the last freeze, and
thaws if enough frozen ones closed."""
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


def _serving() -> bool:
    return False


class FrozenConnections:
    """Told of each connection opened or closed; freezes and thaws."""

    def __init__(
        self,
        *,
        minimum: int = MINIMUM,
        settle: float = SETTLE_SECONDS,
        later: Callable[[float, Callable[[], None]], Timer] | None = None,
        freeze: Callable[[], None] = freeze,
        thaw: Callable[[], None] = thaw,
        frozen_objects: Callable[[], int] = gc.get_freeze_count,
        draining: Callable[[], bool] = _serving,
    ) -> None:
        self.minimum = minimum
        self.settle = settle
        self._later = later
        self._freeze = freeze
        self._thaw = thaw
        self._frozen_objects = frozen_objects
        self._draining = draining
        self.freezes = 0
        """Freezes (and thaws) run: a connection opened before the last one is frozen."""
        self.frozen_at = 0
        """The number of connections at the last freeze (or thaw)."""
        self.opened = 0
        """Connections opened since the last freeze and still open: their objects are walked."""
        self.closed = 0
        """Frozen connections closed since the last thaw: their cycles are frozen garbage."""
        self.closed_bound = minimum
        """Closes that call for a thaw once the count is still: a quarter of the frozen
        objects' worth."""
        self._count = 0
        self._settling: Timer | None = None
        self._soon = False

    @property
    def closed_limit(self) -> int:
        """Closes that call for a thaw at once: the frozen objects' worth of garbage.

        A wave closing every frozen connection stays under it (one thaw, once still);
        churn that never lets the count be still thaws here, its garbage so bounded."""
        return 4 * self.closed_bound

    def counted(self, connection: Connection, connections: int) -> None:
        """Note a connection opened or closed (``connections`` open now); freeze or thaw
        if enough moved."""
        opening = connections > self._count
        self._count = connections
        if self._draining():
            return
        if opening:
            connection.opened_after = self.freezes
            self.opened += 1
        elif connection.opened_after < self.freezes:
            self.closed += 1
        elif self.opened:
            self.opened -= 1  # never frozen: ordinary collections free its cycles
        if self.closed >= self.closed_limit:
            self._thaw_soon()
        elif self.opened >= max(self.minimum, self.frozen_at // 4):
            self._freeze()
            self._frozen()
        elif self.opened or self.closed >= self.closed_bound:
            self._settle_later()

    def settled(self) -> None:
        """The count has been still (or the frozen garbage is at its limit): thaw if enough
        frozen connections closed, else freeze those opened since the last freeze."""
        self._settling, self._soon = None, False
        if self._draining():
            return
        if self.closed >= self.closed_bound:
            self._thaw()
            self.closed = 0
            self._frozen()
        elif self.opened:
            self._freeze()
            self._frozen()

    def _frozen(self) -> None:
        self.freezes += 1
        self.frozen_at, self.opened = self._count, 0
        # Counting the frozen objects walks their list (~1 ms for 300,000): once a freeze.
        self.closed_bound = max(self.minimum, self._frozen_objects() // (4 * PER_CONNECTION))
        if self.closed >= self.closed_bound:
            self._settle_later()  # a freeze frees no frozen garbage: the thaw is still due
        elif self._settling is not None:
            self._settling.cancel()
            self._settling, self._soon = None, False

    def _thaw_soon(self) -> None:
        if not self._soon:
            self._call(0.0)
            self._soon = True

    def _settle_later(self) -> None:
        if not self._soon:
            self._call(self.settle)

    def _call(self, delay: float) -> None:
        if self._settling is not None:
            self._settling.cancel()
        later = self._later or asyncio.get_running_loop().call_later
        self._settling = later(delay, self.settled)
