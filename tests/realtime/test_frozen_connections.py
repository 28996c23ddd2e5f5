"""The open connections' objects frozen out of the collector's sight once opened, thawed and
collected once a quarter of them closed (realtime/frozen_connections.py): a steady set of
connections is never walked again, a closed connection's cycles are still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from cmschat.realtime import frozen_connections
from cmschat.realtime.connections import Connection, Hub
from cmschat.realtime.frozen_connections import PER_CONNECTION, FrozenConnections, Timer


class Freezer:
    """A FrozenConnections whose freezes, thaws and settle timers are noted, not run."""

    def __init__(self, startup_objects: int = 0) -> None:
        self.runs: list[tuple[str, int]] = []
        self.timers: list[Callable[[], None]] = []
        self.policy = FrozenConnections(
            minimum=100,
            later=self._later,
            freeze=lambda: self.runs.append(("freeze", self.policy._count)),
            thaw=lambda: self.runs.append(("thaw", self.policy._count)),
            frozen_objects=lambda: startup_objects + PER_CONNECTION * self.policy._count,
        )

    def _later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append(callback)
        return self

    def cancel(self) -> None:
        """A timer replaced or no longer needed (the callbacks noted stay callable)."""

    def count(self, *counts: int) -> None:
        for count in counts:
            self.policy.counted(count)


def test_a_ramp_freezes_each_time_it_has_grown_by_a_quarter_then_once_settled() -> None:
    freezer = Freezer()
    freezer.count(*range(1, 1001))
    assert freezer.runs == [("freeze", n) for n in (100, 200, 300, 400, 500, 625, 781, 976)]
    freezer.timers[-1]()  # the count has been still since 1,000
    assert freezer.runs[-1] == ("freeze", 1000)
    assert freezer.policy.opened == 0


def test_a_few_connections_are_frozen_once_the_count_is_still() -> None:
    freezer = Freezer()
    freezer.count(1, 2, 3)
    assert freezer.runs == []
    freezer.timers[-1]()
    assert freezer.runs == [("freeze", 3)]
    freezer.policy.settled()  # a timer that was due when nothing had opened since
    assert freezer.runs == [("freeze", 3)]


def test_a_steady_set_of_connections_is_never_walked_again() -> None:
    freezer = Freezer()
    freezer.count(1000)
    for _ in range(10_000):  # rooms followed and left, nothing opened or closed
        freezer.count(1000)
    assert freezer.runs == [("freeze", 1000)]


def test_clients_reconnecting_around_a_steady_number_thaw_once_a_quarter_closed() -> None:
    """Each close leaves cycles only a collection of them frees, whatever the count does."""
    freezer = Freezer()
    freezer.count(1000)
    for _ in range(1000):  # one client drops and comes back, a thousand times
        freezer.count(999, 1000)
    thaws = [count for what, count in freezer.runs if what == "thaw"]
    assert thaws == [999, 999, 999, 999]  # at every 250th close


def test_closing_a_quarter_of_them_thaws() -> None:
    freezer = Freezer()
    freezer.count(1000)
    freezer.count(*range(999, 700, -1))
    assert freezer.runs == [("freeze", 1000), ("thaw", 750)]


def test_a_wave_of_closes_thaws_once_they_are_a_quarter_of_the_frozen_objects() -> None:
    """Each thaw walks every frozen object, the startup's too: one per quarter of them
    closed, as Python collects its oldest generation, not one per quarter of the
    connections (seven thaws of ~250 ms each as 1,000 clients left, in a ws_load run)."""
    freezer = Freezer(startup_objects=200_000)
    freezer.count(1000)
    freezer.count(*range(999, -1, -1))
    assert freezer.runs == [("freeze", 1000), ("thaw", 250)]
    assert freezer.policy.closed == 250  # the rest's cycles wait: < a quarter of 225,000


def test_the_hub_counts_each_connection_once() -> None:
    counts: list[int] = []
    hub = Hub()
    hub.counted = counts.append
    first, second = Connection(user_id=1, queue_size=10), Connection(user_id=1, queue_size=10)
    hub.add(first, {1})
    hub.add(second, {1, 2})
    hub.add(first, {3})  # a room more for a connection already counted
    hub.remove(first)
    hub.remove(first)  # removed twice (closed while being ended): counted once
    assert counts == [1, 2, 1]


class Node:
    """A container in a reference cycle, as a closed connection's objects are."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's collector with nothing frozen, before and after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_a_frozen_connection_is_not_walked_and_a_thaw_frees_its_cycles() -> None:
    connection = Node()
    frozen_connections.freeze()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert not any(o is connection for o in gc.get_objects())  # no collection walks it
    closed = weakref.ref(connection)
    del connection
    gc.collect()
    assert closed() is not None  # a closed connection's cycle, frozen: not freed yet
    frozen_connections.thaw()
    assert closed() is None  # freed by the thaw's collection
    assert gc.get_freeze_count() > frozen // 2  # and the living frozen again


@pytest.mark.usefixtures("unfrozen")
def test_a_freeze_collects_the_garbage_it_would_otherwise_keep() -> None:
    garbage = weakref.ref(Node())  # a cycle already unreachable, not yet collected
    frozen_connections.freeze()
    assert garbage() is None
