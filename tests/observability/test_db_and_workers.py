"""Query timing and slow-query logs; several worker processes summed in multiprocess mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from bench import children
from cmschat.db.session import create_engine
from cmschat.observability import tracing
from cmschat.observability.db_metrics import fingerprint, instrument_engine, operation_of
from cmschat.observability.logging import install_log_context, route_var
from tests.observability.metrics_support import value

# Slow on purpose: counts to a few hundred thousand inside SQLite.
SLOW_SQL = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
    "SELECT count(*) FROM n WHERE :marker IS NOT NULL"
)


def test_fingerprints_hide_literals_and_collapse_lists() -> None:
    shape = fingerprint("SELECT * FROM t WHERE a = 'x''y' AND b IN (?, ?, ?)\n  AND c = 42")
    assert shape == "SELECT * FROM t WHERE a = ? AND b IN (...) AND c = ?"
    assert operation_of("  with x as (select 1) select * from x") == "SELECT"
    assert operation_of("PRAGMA foreign_keys=ON") == "OTHER"


async def test_a_slow_query_is_counted_and_logged_without_its_parameters(
    tmp_path: Path, all_logs: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}")
    instrument_engine(engine, slow_ms=1)
    install_log_context()  # as create_app does: records carry the route
    before = value("cmschat_db_slow_queries_total", operation="SELECT")
    route_var.set("/api/v1/test/{thing}")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(SLOW_SQL), {"marker": "secret-parameter-value"})
    finally:
        await engine.dispose()
    assert value("cmschat_db_slow_queries_total", operation="SELECT") >= before + 1
    [record] = [
        r
        for r in all_logs.records
        if r.name == "cmschat.db.slow" and "RECURSIVE" in getattr(r, "db.statement", "")
    ]
    assert getattr(record, "http.route") == "/api/v1/test/{thing}"
    assert getattr(record, "event.duration") >= 1_000_000
    assert len(getattr(record, "db.fingerprint")) == 16
    assert "WITH RECURSIVE" in getattr(record, "db.statement")
    assert "secret-parameter-value" not in str(record.__dict__)


async def test_statements_are_timed_without_engine_events_failures_spanned_with_their_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'timed.db'}")
    instrument_engine(engine, slow_ms=60_000, span_ms=60_000)
    # No engine listener: SQLAlchemy keeps its path without connection event dispatch.
    assert not engine.sync_engine._has_events
    spans: list[tuple[str, str, BaseException | None]] = []
    monkeypatch.setattr(tracing, "enabled", lambda: True)
    monkeypatch.setattr(
        tracing,
        "sql_span",
        lambda operation, statement, _system, _seconds, error=None: spans.append(
            (operation, statement, error)
        ),
    )
    counted = {
        op: value("cmschat_db_query_duration_seconds_count", operation=op)
        for op in ("SELECT", "INSERT", "OTHER")
    }
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (a INTEGER)")  # no parameters
            await conn.execute(text("INSERT INTO t VALUES (:a)"), [{"a": 1}, {"a": 2}])  # many
            await conn.execute(text("SELECT a FROM t WHERE a = :a"), {"a": 1})
            with pytest.raises(OperationalError):
                await conn.execute(text("SELECT a FROM missing WHERE a = :a"), {"a": 1})
    finally:
        await engine.dispose()
    assert (
        value("cmschat_db_query_duration_seconds_count", operation="OTHER") == counted["OTHER"] + 1
    )
    assert (
        value("cmschat_db_query_duration_seconds_count", operation="INSERT")
        == counted["INSERT"] + 1
    )
    # The failed SELECT is spanned with its error, not counted as a timed query.
    assert (
        value("cmschat_db_query_duration_seconds_count", operation="SELECT")
        == counted["SELECT"] + 1
    )
    [(operation, statement, error)] = spans
    assert (operation, statement) == ("SELECT", "SELECT a FROM missing WHERE a = ?")
    assert "no such table" in str(error)


async def test_a_checkout_that_waits_for_a_dry_pool_is_counted_and_timed(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1, max_overflow=0
    )
    instrument_engine(engine, slow_ms=1000)
    waits_before = value("cmschat_db_pool_wait_seconds_count")
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT 1"))
            assert value("cmschat_db_pool_checkouts_waiting") == 0
            second = asyncio.create_task(engine.connect().__aenter__())
            # The second checkout is counted while it waits for the only connection (it
            # gets there within a few turns of the event loop).
            for _turn in range(10_000):
                if value("cmschat_db_pool_checkouts_waiting") == 1:
                    break
                await asyncio.sleep(0)
            assert value("cmschat_db_pool_checkouts_waiting") == 1
            assert not second.done()
        async with asyncio.timeout(10):
            waiter = await second
        await waiter.close()
    finally:
        await engine.dispose()
    assert value("cmschat_db_pool_checkouts_waiting") == 0
    assert value("cmschat_db_pool_wait_seconds_count") >= waits_before + 2


async def test_connections_in_use_are_counted_without_pool_listeners(tmp_path: Path) -> None:
    # A checkout listener would send every checkout through the pool's retry path.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'use.db'}", pool_size=2, max_overflow=0
    )
    instrument_engine(engine, slow_ms=1000)
    assert not engine.sync_engine.pool.dispatch.checkout
    in_use = "cmschat_db_pool_connections_in_use"
    before = value(in_use)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            assert value(in_use) == before + 2
        assert value(in_use) == before
        await engine.dispose()  # a new pool in the old one's place: counted the same
        async with engine.connect() as again:
            await again.execute(text("SELECT 1"))
            assert value(in_use) == before + 1
        assert value(in_use) == before
    finally:
        await engine.dispose()


WORKER = """
from cmschat.observability import instruments as m
m.HTTP_REQUESTS.labels(method="GET", route="/healthz", status="200").inc()
"""
SCRAPE = """
from cmschat.observability.metrics import render
print(render(include_sensitive=False).decode())
"""


def healthz_totals(env: dict[str, str]) -> tuple[str, dict[str, float]]:
    """A scrape of the multiprocess directory in ``env``, and its ``/healthz`` samples."""
    scraped = subprocess.run(  # noqa: S603
        [sys.executable, "-c", SCRAPE],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        preexec_fn=children.with_parent(),
    ).stdout.decode()
    totals = {
        sample.name: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.labels.get("route") == "/healthz"
    }
    return scraped, totals


def test_several_worker_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(3):
        subprocess.run(  # noqa: S603
            [sys.executable, "-c", WORKER],
            env=env,
            check=True,
            timeout=60,
            preexec_fn=children.with_parent(),
        )
    scraped, totals = healthz_totals(env)
    assert totals["cmschat_http_requests_total"] == 3
    assert "cmschat_audit_head_id" not in scraped


FORKING_WORKER = """
import os
from cmschat.observability.asgi_metrics import _request_series
counted, timed = _request_series("GET", "/healthz", 200)
counted.inc()
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        counted, timed = _request_series("GET", "/healthz", 200)
        counted.inc()
        timed.observe(0.01)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_request_series_kept_before_a_fork_count_in_each_worker_once(tmp_path: Path) -> None:
    # The middleware keeps its labelled series; workers forked after the first request
    # must still write to their own files, not add to (or reset) the parent's.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run(  # noqa: S603
        [sys.executable, "-c", FORKING_WORKER],
        env=env,
        check=True,
        timeout=60,
        preexec_fn=children.with_parent(),
    )
    _, totals = healthz_totals(env)
    assert totals["cmschat_http_requests_total"] == 3
    assert totals["cmschat_http_request_duration_seconds_count"] == 2
