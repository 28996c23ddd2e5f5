"""The hot series written without prometheus-client's per-call checks read exactly as
``observe``/``inc`` would have written them, in this process and across workers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import FrameType

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from bench import children
from cmschat.observability.instruments import QUERY_BUCKETS
from cmschat.observability.series import CountSeries, HistogramSeries, Level

# On, between and beyond the bounds; zero, negative and infinite too.
AMOUNTS = (0.0, 0.0005, 0.00050001, 0.0007, 0.001, 0.003, 0.25, 1, 4.9, 5, 7.5, -1.0, math.inf)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    """Every sample of the family ``name`` (suffix and ``le``), without its creation time."""
    return {
        (sample.name.removeprefix(name), sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if family.name == name and not sample.name.endswith("_created")
    }


def test_a_wrapped_histogram_holds_what_observe_would_have() -> None:
    registry = CollectorRegistry()
    by_observe = Histogram("a_seconds", "a", ["op"], buckets=QUERY_BUCKETS, registry=registry)
    wrapped = Histogram("b_seconds", "b", ["op"], buckets=QUERY_BUCKETS, registry=registry)
    series = HistogramSeries(wrapped.labels(op="SELECT"))
    for amount in AMOUNTS:
        by_observe.labels(op="SELECT").observe(amount)
        series.observe(amount)
    expected = samples(registry, "a_seconds")
    assert expected[("_count", "")] == len(AMOUNTS)
    assert samples(registry, "b_seconds") == expected


def test_many_observations_of_one_amount_hold_what_as_many_observes_would_have() -> None:
    """One event's frame written to several sockets in one pass is observed once, with
    the number of sockets (realtime/fanout.py)."""
    registry = CollectorRegistry()
    by_observe = Histogram("m_seconds", "m", buckets=QUERY_BUCKETS, registry=registry)
    wrapped = Histogram("n_seconds", "n", buckets=QUERY_BUCKETS, registry=registry)
    series = HistogramSeries(wrapped)
    for count, amount in enumerate((0.0005, 0.003, 0.003, 0.25, 7.5), start=1):
        for _ in range(count):
            by_observe.observe(amount)
        series.observe_many(amount, count)
    expected = samples(registry, "m_seconds")
    assert expected[("_count", "")] == 15
    got = samples(registry, "n_seconds")
    assert got.pop(("_sum", "")) == pytest.approx(expected.pop(("_sum", "")))
    assert got == expected


def test_a_wrapped_histograms_bucket_is_a_c_step_and_the_librarys_observe_still_counts() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("d_seconds", "d", buckets=QUERY_BUCKETS, registry=registry)
    series = HistogramSeries(histogram)
    python_calls: list[str] = []

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            python_calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        series.observe(0.003)
    finally:
        sys.setprofile(None)
    assert python_calls == ["observe", "inc"]  # the sum's; the bucket's step is a C call
    histogram.observe(0.003)  # the library's own path on the same series
    histogram.observe(2.5)
    assert registry.get_sample_value("d_seconds_count") == 3
    assert registry.get_sample_value("d_seconds_bucket", {"le": "0.005"}) == 2
    assert registry.get_sample_value("d_seconds_sum") == pytest.approx(2.506)


def test_wrapped_counters_and_gauges_hold_what_inc_and_dec_would_have() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["route"], registry=registry)
    gauge = Gauge("g", "g", registry=registry)
    counted, level = CountSeries(counter.labels(route="/x")), CountSeries(gauge)
    for _ in range(3):
        counted.inc()
        level.inc()
    level.dec()
    assert registry.get_sample_value("c_total", {"route": "/x"}) == 3
    assert registry.get_sample_value("g") == 2


def test_a_level_reads_ups_less_downs_and_its_steps_run_no_python_code() -> None:
    registry = CollectorRegistry()
    level = Level(Gauge("in_flight", "i", registry=registry))
    python_calls: list[str] = []

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            python_calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        for _ in range(3):
            level.up()
        level.down()
    finally:
        sys.setprofile(None)
    # C calls only: no Python frame and no lock per request (the library's inc is both).
    assert python_calls == []
    assert registry.get_sample_value("in_flight") == 2


LEVELS = """
from prometheus_client import Gauge
from cmschat.observability.series import Level
level = Level(Gauge("cmschat_test_level", "t", multiprocess_mode="livesum"))
level.up()
level.up()
level.down()
from cmschat.observability.metrics import render
print(render(include_sensitive=False).decode())
"""


def test_a_level_in_multiprocess_mode_is_written_for_the_other_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    scraped = subprocess.run(  # noqa: S603
        [sys.executable, "-c", LEVELS],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        preexec_fn=children.with_parent(),
    ).stdout.decode()
    [level] = [
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "cmschat_test_level"
    ]
    assert level == 1


def test_a_wrapped_counter_steps_in_c_and_keeps_the_librarys_own_writes() -> None:
    registry = CollectorRegistry()
    counter = Counter("e", "e", registry=registry)
    series = CountSeries(counter)
    python_calls: list[str] = []

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            python_calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        series.inc()
    finally:
        sys.setprofile(None)
    assert python_calls == []
    counter.inc(2.5)  # the library's own path on the same series
    assert registry.get_sample_value("e_total") == 3.5
    counter.reset()
    series.inc()
    assert registry.get_sample_value("e_total") == 1


WORKER = """
import asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from cmschat.observability.db_metrics import instrument_engine

async def main() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    instrument_engine(engine, slow_ms=600_000)
    async with engine.connect() as connection:
        for n in range(7):
            await connection.execute(text("SELECT :n"), {"n": n})
    await engine.dispose()

asyncio.run(main())
"""
SCRAPE = """
from cmschat.observability.metrics import render
print(render(include_sensitive=False).decode())
"""


def test_every_statement_of_two_workers_is_in_one_scrape(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run(  # noqa: S603
            [sys.executable, "-c", WORKER],
            env=env,
            check=True,
            timeout=60,
            preexec_fn=children.with_parent(),
        )
    scraped = subprocess.run(  # noqa: S603
        [sys.executable, "-c", SCRAPE],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        preexec_fn=children.with_parent(),
    ).stdout.decode()
    selects = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.labels.get("operation") == "SELECT"
        and sample.name.startswith("cmschat_db_query_duration_seconds")
    }
    assert selects[("cmschat_db_query_duration_seconds_count", None)] == 14
    assert selects[("cmschat_db_query_duration_seconds_bucket", "+Inf")] == 14
    assert selects[("cmschat_db_query_duration_seconds_sum", None)] > 0
    waits = {
        sample.name: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name.startswith("cmschat_db_pool_wait_seconds")
    }
    assert waits["cmschat_db_pool_wait_seconds_count"] == 2  # one checkout per worker
