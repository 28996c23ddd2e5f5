"""Full collections paced by the open connections (realtime/gc_pacing.py): a ramp, a
wave of closes or clients reconnecting pays for its own, a steady set of connections none."""

from __future__ import annotations

import gc

from cmschat.realtime.connections import Connection, Hub
from cmschat.realtime.gc_pacing import FullCollections


def pacing() -> tuple[FullCollections, list[int]]:
    """A pacer whose collections are noted, with the connection count each ran at."""
    runs: list[int] = []
    pacer = FullCollections(minimum=100, collect=lambda: runs.append(pacer.counted_at))
    return pacer, runs


def test_a_ramp_collects_each_time_it_has_grown_by_a_quarter() -> None:
    pacer, runs = pacing()
    for count in range(1, 1001):
        pacer.counted(count)
    assert runs == [100, 200, 300, 400, 500, 625, 781, 976]


def test_a_steady_set_of_connections_never_collects() -> None:
    pacer, runs = pacing()
    pacer.counted(1000)
    for _ in range(10_000):  # connections moving rooms, nothing opened or closed
        pacer.counted(1000)
    assert runs == [1000]


def test_clients_reconnecting_around_a_steady_number_collect_once_a_quarter_closed() -> None:
    """Each close leaves cycles only a full collection frees, whatever the count does."""
    pacer, runs = pacing()
    pacer.counted(1000)
    for _ in range(1000):  # one client drops and comes back, a thousand times
        pacer.counted(999)
        pacer.counted(1000)
    assert runs == [1000, 999, 999, 999, 999]  # at every 250th close


def test_closing_a_quarter_of_them_collects() -> None:
    pacer, runs = pacing()
    pacer.counted(1000)
    for count in range(999, 700, -1):
        pacer.counted(count)
    assert runs == [1000, 750]


def test_the_hub_counts_each_connection_once() -> None:
    counts: list[int] = []
    hub = Hub(counted=counts.append)
    first, second = Connection(user_id=1, queue_size=10), Connection(user_id=1, queue_size=10)
    hub.add(first, {1})
    hub.add(second, {1, 2})
    hub.add(first, {3})  # a room more for a connection already counted
    hub.remove(first)
    hub.remove(first)  # removed twice (closed while being ended): counted once
    assert counts == [1, 2, 1]


def test_the_default_collector_runs_a_full_collection() -> None:
    generations: list[int] = []

    def noted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(noted)
    try:
        FullCollections(minimum=1).counted(1)
    finally:
        gc.callbacks.remove(noted)
    assert 2 in generations
