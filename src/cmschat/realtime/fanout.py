"""One pass over every connection that has frames queued: a room's fan-out in one callback.

An event reaches each of its room's connections through ``offer_each``; each then has
what is queued written soon. Scheduling that per connection cost two loop callbacks per
delivered frame, and counting the frames per write a counter step, a clock read and a
histogram observation per frame. The hub's ``WritePass`` instead gathers the connections
that have something to write and writes them all in one callback two loop turns later (so
that a commit's events and the acks of its sends, made one turn later as their senders
wake, share each socket's write), then counts what the pass wrote once: the frame counter
stepped by the total, the clock read once, one observation per distinct event frame with
the number of sockets it went to (docs/performance.md, "The WebSocket server's cost per
send and per delivered frame").

Each connection still writes its own queue, in order; one that must wait (a gap to fill,
a catch-up, a full socket) goes on in a task of its own, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cmschat.observability import instruments

Writer = Callable[[list[str]], None]
"""Writes what one connection has queued now, adding each frame written to the list."""


class WritePass:
    """The connections waiting for the next pass, and that pass's scheduling."""

    __slots__ = ("_due", "_scheduled")

    def __init__(self) -> None:
        self._due: list[Writer] = []
        self._scheduled = False

    def add(self, writer: Writer) -> None:
        """Have ``writer`` run in the next pass (its connection had nothing scheduled)."""
        self._due.append(writer)
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._run)

    def _run(self) -> None:
        due, self._due = self._due, []
        self._scheduled = False
        written: list[str] = []
        try:
            for writer in due:
                writer(written)  # each handles its own connection's failures
        finally:
            if written:
                instruments.frames_written(written)
