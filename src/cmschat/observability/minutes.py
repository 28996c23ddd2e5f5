"""This process's traffic since the last monitoring sample: the numbers behind the console's charts.

Prometheus counters only grow and their histograms have coarse buckets; the console wants
"requests in this minute" and a p95 worth plotting. So the ASGI layer also feeds this
small window, and the sampler takes (and resets) it once a minute. Durations are kept in a
bounded reservoir: a busy minute costs at most ``RESERVOIR`` floats, and the p95 of a
uniform sample of the minute's requests is still its p95.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

RESERVOIR = 10_000
# Probes and scrapes would drown the traffic people cause.
IGNORED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Taken:
    """One window's totals."""

    requests: int
    errors: int
    """Answers with status 500 or above."""
    p95_ms: float | None
    """None when nothing was answered."""
    messages: int
    websockets: int
    """Open right now (not a total)."""


@dataclass
class Window:
    """Counts since the last ``take``; one per process, fed by the ASGI middleware."""

    requests: int = 0
    errors: int = 0
    messages: int = 0
    websockets: int = 0
    durations: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)

    def request(self, route: str, status: int, seconds: float) -> None:
        """An HTTP request was answered."""
        if route in IGNORED_ROUTES:
            return
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if len(self.durations) < RESERVOIR:
            self.durations.append(seconds)
        else:
            # Reservoir sampling (algorithm R): every request equally likely to be kept.
            slot = self._rng.randrange(self.requests)
            if slot < RESERVOIR:
                self.durations[slot] = seconds

    def message_stored(self) -> None:
        """A chat message was committed."""
        self.messages += 1

    def websocket_opened(self) -> None:
        """A WebSocket was accepted."""
        self.websockets += 1

    def websocket_closed(self) -> None:
        """An accepted WebSocket ended."""
        self.websockets -= 1

    def take(self) -> Taken:
        """The totals since the last call; counters start again from zero."""
        taken = Taken(
            requests=self.requests,
            errors=self.errors,
            p95_ms=percentile(self.durations, 0.95) * 1000 if self.durations else None,
            messages=self.messages,
            websockets=self.websockets,
        )
        self.requests = self.errors = self.messages = 0
        self.durations = []
        return taken


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


WINDOW = Window()
"""This process's window."""
