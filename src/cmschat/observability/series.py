"""The hottest labelled series, written without prometheus-client's per-call checks.

``Histogram.observe`` checks that the series has its labels (two method calls), then walks
the buckets in Python to find the observation's; ``Counter.inc`` and ``Gauge.inc`` check
the labels and the mode each call. Every SQL statement and every request makes a few of
these calls, a dozen and more a send (issue 12 point 9). Here the checks are made once,
when a series is wrapped, and the bucket is found by bisection. In one process, what only
ever goes up by one (a bucket, a counter) is stepped without a lock (``CountedValue``), and
gauges of things in progress are ``Level``s read at scrape time; a histogram's sum and
everything in multiprocess mode are written to the library's own value objects
(``MutexValue``, or ``MmapedValue``, which re-opens its file after a fork by itself). What a
scrape reads, from this process or any worker, is what ``observe``/``inc`` would have
written: ``tests/observability/test_series.py`` compares both ways sample for sample.
"""

from __future__ import annotations

import functools
import itertools
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class HistogramSeries:
    """``observe`` of one histogram series (a labelled child, or a metric without labels)."""

    __slots__ = ("_bounds", "_buckets", "_steps", "_sum")

    def __init__(self, series: Histogram) -> None:
        series._raise_if_not_observable()  # type: ignore[no-untyped-call]
        self._bounds: list[float] = list(series._upper_bounds)
        self._sum: Any = series._sum
        buckets: list[Any] = series._buckets
        if not self._sum._multiprocess:
            for n, bucket in enumerate(buckets):
                if not isinstance(bucket, CountedValue):
                    buckets[n] = CountedValue(bucket)
            self._steps: list[Callable[[], object]] = [bucket.step for bucket in buckets]
        else:
            self._steps = [functools.partial(bucket.inc, 1) for bucket in buckets]
        self._buckets = buckets

    def observe(self, amount: float) -> None:
        """One observation: its sum and its bucket (the first bound not below it)."""
        self._sum.inc(amount)
        self._steps[bisect_left(self._bounds, amount)]()

    def observe_many(self, amount: float, count: int) -> None:
        """``count`` observations of the same ``amount`` at once (one event's frame written
        to ``count`` sockets in the same pass): as many ``observe`` calls would write."""
        self._sum.inc(amount * count)
        self._buckets[bisect_left(self._bounds, amount)].inc(count)


class CountedValue:
    """A histogram bucket's or a counter's value in one process, stepped by an
    ``itertools.count``.

    A bucket, and the counters here, only ever go up by one, so a step can be ``next``
    on a counter: one C call, atomic under the interpreter lock, instead of the library
    value's Python ``inc`` and its mutex (some 3,000 instructions; a history page
    observes four histograms, a send a dozen and more, issue 12 point 9). What the
    library itself writes (``observe``/``inc`` on the same series from elsewhere) still
    counts: ``inc(1)`` steps the same counter, other amounts, ``set`` and the exemplar go
    to the library's own value, and a scrape reads the sum of both.
    """

    __slots__ = ("_base", "_steps", "step")
    _multiprocess = False

    def __init__(self, base: Any) -> None:
        self._base = base
        self._steps = itertools.count()
        self.step: Callable[[], object] = functools.partial(next, self._steps)

    def inc(self, amount: float) -> None:
        """Add ``amount`` (one: a step)."""
        if amount == 1:
            self.step()
        else:
            self._base.inc(amount)

    def set(self, value: float, timestamp: float | None = None) -> None:
        """The value becomes ``value`` (a counter's ``reset``): the steps so far taken off."""
        self._base.set(value - _count_of(self._steps), timestamp)

    def get(self) -> float:
        """The value: the library's plus the steps."""
        return float(self._base.get() + _count_of(self._steps))

    def set_exemplar(self, exemplar: Any) -> None:
        """Kept by the library's value."""
        self._base.set_exemplar(exemplar)

    def get_exemplar(self) -> Any:
        """Kept by the library's value."""
        return self._base.get_exemplar()


class CountSeries:
    """``inc``/``dec`` of one counter or gauge series (gauges: not ``mostrecent`` modes).

    A counter of one process steps a ``CountedValue`` (``inc``: one C call, ``step``)."""

    __slots__ = ("_value", "inc")

    def __init__(self, series: Counter | Gauge) -> None:
        series._raise_if_not_observable()  # type: ignore[no-untyped-call]
        if getattr(series, "_is_most_recent", False):
            raise ValueError("a mostrecent gauge is set, not counted")
        value: Any = series._value
        self.inc: Callable[[], object]
        if isinstance(series, Counter) and not value._multiprocess:
            if not isinstance(value, CountedValue):
                value = series._value = CountedValue(value)
            self.inc = value.step
        else:
            self.inc = functools.partial(value.inc, 1)
        self._value = value

    def dec(self) -> None:
        """Take one away (gauges only)."""
        self._value.inc(-1)


def _count_of(counter: itertools.count[int]) -> int:
    """How far ``counter`` (from 0, by 1) has counted, without taking a number: read from
    its ``repr``, ``count(N)`` (``__reduce__`` would do, but itertools' pickling support
    is deprecated since Python 3.12 and goes in 3.14)."""
    return int(repr(counter)[6:-1])


class Level:
    """A gauge of things in progress (requests in flight, connections in use), counted
    without a lock.

    In one process ``up``/``down`` are ``next`` on two ``itertools.count``: one C call
    each, atomic under the interpreter lock, from any thread; the gauge reads their
    difference when scraped (``set_function``). A locked step of the library's value
    (two Python calls and a mutex) cost some 3,000 instructions, and a history page made
    six of them for two such gauges (issue 12 point 9). In multiprocess mode a scrape
    reads every worker's file, so each step is written there at once, as ``inc``/``dec``
    would (``_multiprocess`` is the library's mark of that mode, fixed when the gauge was
    made).
    """

    __slots__ = ("_downs", "_ups", "down", "up")

    def __init__(self, gauge: Gauge) -> None:
        gauge._raise_if_not_observable()  # type: ignore[no-untyped-call]
        value: Any = gauge._value
        self.up: Callable[[], object]
        self.down: Callable[[], object]
        if value._multiprocess:
            if getattr(gauge, "_is_most_recent", False):
                raise ValueError("a mostrecent gauge is set, not counted")
            self.up = functools.partial(value.inc, 1)
            self.down = functools.partial(value.inc, -1)
            return
        self._ups, self._downs = itertools.count(), itertools.count()
        self.up = functools.partial(next, self._ups)
        self.down = functools.partial(next, self._downs)
        gauge.set_function(self.level)

    def level(self) -> float:
        """Ups less downs so far (one process; read at scrape time)."""
        downs = _count_of(self._downs)  # first: a step between the two reads shows as +1
        return float(_count_of(self._ups) - downs)
