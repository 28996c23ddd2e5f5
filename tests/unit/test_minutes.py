"""The per-minute window behind the console's traffic charts."""

from __future__ import annotations

import pytest

from cmschat.observability.minutes import RESERVOIR, Window, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0], 0.95) == 2.0


def test_take_reports_the_minute_and_starts_again() -> None:
    window = Window()
    window.request("/api/v1/rooms", 200, 0.010)
    window.request("/api/v1/rooms", 502, 0.300)
    window.request("/healthz", 200, 9.0)
    window.websocket_opened()
    window.websocket_opened()
    window.websocket_closed()
    window.message_stored()
    taken = window.take()
    assert (taken.requests, taken.errors, taken.messages, taken.websockets) == (2, 1, 1, 1)
    assert taken.p95_ms == pytest.approx(300.0)
    again = window.take()
    assert (again.requests, again.errors, again.p95_ms) == (0, 0, None)
    assert again.websockets == 1  # open connections are a level, not a count


@pytest.mark.parametrize(("slow_every", "p95_ms"), [(10, 1000.0), (100, 10.0)])
def test_a_busy_minute_keeps_a_bounded_sample_with_the_right_p95(
    slow_every: int, p95_ms: float
) -> None:
    window = Window()
    total = RESERVOIR * 3
    for n in range(total):
        # Every slow_every-th request takes a second, the rest 10 ms, spread evenly.
        window.request("/api/v1/rooms", 200, 1.0 if n % slow_every == 0 else 0.010)
    assert len(window.durations) == RESERVOIR  # memory stays bounded
    taken = window.take()
    assert taken.requests == total
    # 10 % slow: the p95 is a slow one; 1 % slow: it is not (the sample is uniform).
    assert taken.p95_ms == pytest.approx(p95_ms)
