"""The benchmarks that measure issue 16's floors, run as a short smoke (issue 16, point 7).

Each tool runs for about a second on a tiny workload, as an operator runs it, and must
finish by itself and report no lost, duplicated, reordered or gapped message. Nothing here
is timed: the figures are measured on a quiet machine and recorded in
docs/performance.md, never asserted in the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import children
from tests import support

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 300
SHORT = ("--duration", "1", "--warmup", "0.5")


def run_bench(tmp_path: Path, tool: str, *args: str) -> dict[str, Any]:
    """Run ``bench/<tool>.py ARGS --json`` to completion; its results."""
    out = tmp_path / f"{tool}.json"
    done = subprocess.run(  # noqa: S603 - our own interpreter and bench
        [sys.executable, str(ROOT / "bench" / f"{tool}.py"), *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS,
        check=False,
        preexec_fn=children.with_parent(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.read_text())
    return results


@pytest.mark.parametrize("db", ["sqlite", "mariadb"])
def test_ws_sends_every_ack_stored_and_delivered_once_in_order(tmp_path: Path, db: str) -> None:
    if db == "mariadb":
        support.mariadb_available()
    got = run_bench(tmp_path, "ws_sends", "--db", db, "--senders", "20", "--rooms", "4", *SHORT)
    assert got["acked"] > 0 and got["errors"] == 0
    assert got["acked_equals_stored"] is True
    assert got["lost_deliveries"] == got["duplicated"] == got["gaps"] == got["reordered"] == 0
    assert got["closed_early"] == 0


def test_ws_sends_on_a_redis_cluster_with_two_workers(tmp_path: Path) -> None:
    """The scale-out measurement's set-up: a cluster the bench starts, workers meeting there."""
    support.mariadb_available()
    got = run_bench(
        tmp_path, "ws_sends", "--db", "mariadb", "--workers", "2", "--redis-cluster-masters", "3",
        "--senders", "20", "--rooms", "4", *SHORT,
    )  # fmt: skip
    assert got["redis"] == "cluster of 3 masters"
    assert got["acked"] > 0 and got["errors"] == 0 and got["acked_equals_stored"] is True
    assert got["lost_deliveries"] == got["duplicated"] == got["gaps"] == got["reordered"] == 0
    # The events crossed the cluster on shard channels, and MariaDB's counters were read.
    assert got["redis_per_send"]["spublish_calls"] > 0
    assert got["redis_per_send"]["publish_calls"] == 0
    assert got["mariadb_per_send"]["Com_commit"] > 0


def test_ws_load_delivers_every_message_once_in_order(tmp_path: Path) -> None:
    got = run_bench(
        tmp_path, "ws_load", "--clients", "20", "--rooms", "4", "--rate", "40", *SHORT,
        "--drain", "10",
    )  # fmt: skip
    # A send refused as busy (a loaded machine) was never stored: neither lost nor expected.
    assert got["sent_total"] > 0 and got["acked"] + got["refused_busy"] == got["sent_total"]
    assert got["delivered_total"] == got["expected_deliveries_total"]
    assert got["lost"] == got["duplicated"] == got["reordered"] == got["seq_gaps_seen"] == 0
    assert got["stored_unheard"] == 0  # the rooms' seq: every stored message heard of
    assert got["connections_closed_by_server"] == 0
    assert got["latency_p99_ms"] > 0


@pytest.mark.parametrize("db", ["sqlite", "mariadb"])
def test_history_pages_are_served(tmp_path: Path, db: str) -> None:
    if db == "mariadb":
        support.mariadb_available()
    got = run_bench(
        tmp_path, "history", "--db", db, "--messages", "2000", "--concurrency", "4", *SHORT
    )
    assert got["ok_requests"] > 0 and got["requests_per_s"] > 0
    assert got["server_cpu_us_per_request"] > 0


def test_idle_connections_stay_open_and_reachable(tmp_path: Path) -> None:
    got = run_bench(
        tmp_path, "idle_connections", "--connections", "100", "--users", "10",
        "--settle", "0.5", "--sample", "20",
    )  # fmt: skip
    assert got["opened"] == got["still_open_at_end"] == 100
    assert got["sample_reached"] == got["sample_connections"] == 20
    assert got["healthz_status"] == got["readyz_status"] == 200
    assert got["rss_growth_per_connection_kib"] > 0


def test_http_sends_are_all_stored(tmp_path: Path) -> None:
    got = run_bench(tmp_path, "send_throughput", "--senders", "4", "--rooms", "2", *SHORT)
    assert got["created_201_measured"] > 0
    assert got["acknowledged_total"] == got["stored_seq_advance"]


@pytest.mark.redis
def test_broker_events_cross_complete_and_in_order(tmp_path: Path, redis_prefix: str) -> None:
    got = run_bench(tmp_path, "broker_cost", "--events", "2000", "--commit", "100")
    assert got["delivered_in_order"] is True
    assert got["events"] == 2000
    assert 0 < got["publish_calls"] <= 20  # in batches: one per commit at most
