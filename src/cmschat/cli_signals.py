"""A stop asked for while the database is being prepared is acted on once it is done.

``serve`` and ``migrate`` migrate the schema before anything else. A migration cut short
leaves MariaDB's schema half changed (its DDL is not transactional: the next start then
fails on a column that already exists) and the revision unrecorded. Without a handler,
SIGTERM would end the process mid-step; in a container, where cmschat is PID 1, the kernel
ignores it instead, and the engine kills the process at its stop timeout, just as mid-step.
So while the database is prepared, SIGTERM and SIGINT are noted and the command stops when
the step ends; a second signal stops at once, for an operator who means it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

log = logging.getLogger("cmschat.server")

DEFERRED = (signal.SIGTERM, signal.SIGINT)


@dataclass
class StopRequest:
    """The signal that asked to stop, if one came."""

    signal: signal.Signals | None = None

    def note(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise SystemExit(128 + signum)
        self.signal = signal.Signals(signum)
        log.warning(
            "%s received while the database is prepared: stopping once that is done "
            "(a second one stops at once)",
            self.signal.name,
        )


@contextmanager
def stops_deferred() -> Iterator[StopRequest]:
    """SIGTERM and SIGINT noted within, not acted on; the former handlers back after."""
    request = StopRequest()
    former: dict[signal.Signals, Any] = {}
    for number in DEFERRED:
        former[number] = signal.signal(number, request.note)
    try:
        yield request
    finally:
        for number, handler in former.items():
            signal.signal(number, handler)
