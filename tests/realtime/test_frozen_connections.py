"""The open connections' objects frozen out of the collector's sight once opened, thawed and
collected once enough frozen ones closed (realtime/frozen_connections.py): a steady set of
connections is never walked again, a closed connection's cycles are still freed, off the
close path, once a wave."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from cmschat.realtime import frozen_connections
from cmschat.realtime.connections import Connection, Hub
from cmschat.realtime.frozen_connections import PER_CONNECTION, FrozenConnections, Timer


class Freezer:
    """A hub telling a FrozenConnections whose freezes, thaws and timers are noted, not run."""

    def __init__(self, startup_objects: int = 0) -> None:
        self.runs: list[tuple[str, int]] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self._zero_delays = 0
        self.draining = False
        self.policy = FrozenConnections(
            minimum=100,
            later=self._later,
            freeze=lambda: self.runs.append(("freeze", self.policy._count)),
            thaw=lambda: self.runs.append(("thaw", self.policy._count)),
            frozen_objects=lambda: startup_objects + PER_CONNECTION * self.policy._count,
            draining=lambda: self.draining,
        )
        self.hub = Hub()
        self.hub.counted = self.policy.counted
        self.open_connections: list[Connection] = []
        self._users = 0

    def _later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append((delay, callback))
        self._zero_delays += delay == 0
        return self

    def cancel(self) -> None:
        """A timer replaced or no longer needed (the callbacks noted stay callable)."""

    def open(self, count: int = 1) -> None:
        for _ in range(count):
            self._users += 1
            connection = Connection(user_id=self._users, queue_size=10)
            self.hub.add(connection, {1})
            self.open_connections.append(connection)

    def close(self, count: int = 1, *, newest: bool = False) -> None:
        for _ in range(count):
            self.hub.remove(self.open_connections.pop(-1 if newest else 0))

    def settle(self) -> None:
        """The count has been still: the last timer set runs."""
        self.timers[-1][1]()

    def loop_turn(self) -> None:
        """The loop runs what was set to run at once (and only that), once each."""
        if not self._zero_delays:
            return  # nothing due: no scan (the churn test sets 20,000 timers)
        self._zero_delays = 0
        due = [callback for delay, callback in self.timers if delay == 0]
        self.timers = [timer for timer in self.timers if timer[0] != 0]
        for callback in due:
            callback()

    def thaws(self) -> list[int]:
        return [count for what, count in self.runs if what == "thaw"]


def test_a_ramp_freezes_each_time_it_has_grown_by_a_quarter_then_once_settled() -> None:
    freezer = Freezer()
    freezer.open(1000)
    assert freezer.runs == [("freeze", n) for n in (100, 200, 300, 400, 500, 625, 781, 976)]
    freezer.settle()  # the count has been still since 1,000
    assert freezer.runs[-1] == ("freeze", 1000)
    assert freezer.policy.opened == 0


def test_a_few_connections_are_frozen_once_the_count_is_still() -> None:
    freezer = Freezer()
    freezer.open(3)
    assert freezer.runs == []
    freezer.settle()
    assert freezer.runs == [("freeze", 3)]
    freezer.policy.settled()  # a timer that was due when nothing had opened since
    assert freezer.runs == [("freeze", 3)]


def test_a_steady_set_of_connections_is_never_walked_again() -> None:
    freezer = Freezer()
    freezer.open(1000)
    freezer.settle()
    freezer.runs.clear()
    for connection in freezer.open_connections * 10:  # rooms followed and left
        freezer.hub.follow(connection, 2)
        freezer.hub.unfollow(connection, 2)
    assert freezer.runs == []


def test_closing_a_quarter_of_them_thaws_once_the_count_is_still() -> None:
    freezer = Freezer()
    freezer.open(1000)
    freezer.settle()
    freezer.close(250)
    assert freezer.thaws() == []  # not in the close: hundreds of ms of loop
    freezer.settle()
    assert freezer.thaws() == [750]
    assert freezer.policy.closed == 0


def test_a_wave_of_closes_thaws_once() -> None:
    """Each thaw walks every frozen object, the startup's too: three of 360-590 ms each
    as 3,000 connections closed when a thaw ran in the close at each quarter's worth."""
    freezer = Freezer(startup_objects=200_000)
    freezer.open(3000)
    freezer.settle()
    freezer.runs.clear()
    for _ in range(3000):
        freezer.close()
        freezer.loop_turn()
    assert freezer.thaws() == []
    freezer.settle()
    assert freezer.runs == [("thaw", 0)]


def test_closes_of_connections_never_frozen_do_not_thaw() -> None:
    """Probes and reconnect churn: their cycles are freed by ordinary collections, and a
    thaw of 200,000 objects (~250 ms) would free nothing frozen."""
    freezer = Freezer(startup_objects=200_000)
    freezer.open(1000)
    freezer.settle()
    freezer.runs.clear()
    for _ in range(10_000):
        freezer.open()
        freezer.close(newest=True)
        freezer.loop_turn()
    freezer.settle()
    assert freezer.runs == []
    assert (freezer.policy.opened, freezer.policy.closed) == (0, 0)


def test_a_draining_server_neither_thaws_nor_freezes() -> None:
    freezer = Freezer()
    freezer.open(1000)
    freezer.settle()
    freezer.runs.clear()
    freezer.close(300)  # a thaw due once the count is still
    freezer.draining = True
    freezer.settle()
    freezer.open(300)
    freezer.close(1000)  # the shutdown's close_all
    freezer.loop_turn()
    for _, callback in freezer.timers:
        callback()
    assert freezer.runs == []


def test_churn_around_a_steady_count_still_thaws_with_bounded_garbage() -> None:
    """Clients reconnecting all the time: the count is never still, yet the frozen
    garbage stays under the frozen objects' worth."""
    freezer = Freezer(startup_objects=200_000)
    freezer.open(1000)
    freezer.settle()
    most = 0
    for _ in range(20_000):  # the oldest drops, a new one comes
        freezer.close()
        freezer.open()
        freezer.loop_turn()
        most = max(most, freezer.policy.closed)
    assert len(freezer.thaws()) >= 4
    assert most <= 3000  # (200,000 + 1,000 x 100) frozen objects / 100 a connection


def test_the_hub_tells_each_connection_once() -> None:
    counts: list[tuple[Connection, int]] = []
    hub = Hub()
    hub.counted = lambda connection, count: counts.append((connection, count))
    first, second = Connection(user_id=1, queue_size=10), Connection(user_id=1, queue_size=10)
    hub.add(first, {1})
    hub.add(second, {1, 2})
    hub.add(first, {3})  # a room more for a connection already counted
    hub.remove(first)
    hub.remove(first)  # removed twice (closed while being ended): counted once
    assert counts == [(first, 1), (second, 2), (first, 1)]


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
