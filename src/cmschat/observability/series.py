"""The hottest labelled series, written without prometheus-client's per-call checks.

``Histogram.observe`` checks that the series has its labels (two method calls), then walks
the buckets in Python to find the observation's; ``Counter.inc`` and ``Gauge.inc`` check
the labels and the mode each call. Every SQL statement and every request makes a few of
these calls, a dozen and more a send (issue 12 point 9). Here the checks are made once,
when a series is wrapped, and the bucket is found by bisection; the writes themselves are
the library's own value objects (``MutexValue``, or the multiprocess mode's ``MmapedValue``,
which re-opens its file after a fork by itself), so what a scrape reads, from this process
or any worker, is exactly what ``observe``/``inc`` would have written.
``tests/observability/test_series.py`` compares both ways sample for sample.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class HistogramSeries:
    """``observe`` of one histogram series (a labelled child, or a metric without labels)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, series: Histogram) -> None:
        series._raise_if_not_observable()  # type: ignore[no-untyped-call]
        self._bounds: list[float] = list(series._upper_bounds)
        self._buckets: list[Any] = series._buckets
        self._sum: Any = series._sum

    def observe(self, amount: float) -> None:
        """One observation: its sum and its bucket (the first bound not below it)."""
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)


class CountSeries:
    """``inc``/``dec`` of one counter or gauge series (gauges: not ``mostrecent`` modes)."""

    __slots__ = ("_value",)

    def __init__(self, series: Counter | Gauge) -> None:
        series._raise_if_not_observable()  # type: ignore[no-untyped-call]
        if getattr(series, "_is_most_recent", False):
            raise ValueError("a mostrecent gauge is set, not counted")
        self._value: Any = series._value

    def inc(self) -> None:
        """Add one."""
        self._value.inc(1)

    def dec(self) -> None:
        """Take one away (gauges only)."""
        self._value.inc(-1)
