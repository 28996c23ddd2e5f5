"""Events leave through the unit of work: published after its commit, never before, and
never for work that was rolled back (the whole of it, or a savepoint inside it)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.audit.service import audited
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.session import Database
from cmschat.events import Published, queue_events


class Recorder:
    """A publisher that keeps what it was handed, one list per call."""

    def __init__(self) -> None:
        self.calls: list[list[int | None]] = []

    async def __call__(self, events: Sequence[Published]) -> None:
        self.calls.append([event.seq for event in events])


def event(seq: int) -> Published:
    return Published(room_id=1, seq=seq, type="message.created", payload={})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def db(context: AppContext, recorder: Recorder) -> Database:
    """The test database, with a unit of work that publishes to ``recorder``."""
    return audited(Database(context.db.engine, context.clock, publisher=recorder))


async def test_a_commit_publishes_what_was_queued_in_order_and_only_then(
    db: Database, recorder: Recorder
) -> None:
    async with db.unit_of_work(SYSTEM_CLI) as session:
        queue_events(session, [event(1), event(2)])
        queue_events(session, [event(3)])
        assert recorder.calls == []  # still inside the transaction
    assert recorder.calls == [[1, 2, 3]]


async def test_an_exception_after_queueing_publishes_nothing(
    db: Database, recorder: Recorder
) -> None:
    with pytest.raises(RuntimeError):
        async with db.unit_of_work(SYSTEM_CLI) as session:
            queue_events(session, [event(1)])
            raise RuntimeError("the work fails")
    assert recorder.calls == []
    async with db.unit_of_work(SYSTEM_CLI):
        pass  # the next unit of work on the same database starts clean
    assert recorder.calls == []


async def test_a_failed_commit_publishes_nothing(
    db: Database, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: AsyncSession) -> None:
        raise ConnectionError("the database went away at commit")

    with pytest.raises(ConnectionError):
        async with db.unit_of_work(SYSTEM_CLI) as session:
            queue_events(session, [event(1)])
            monkeypatch.setattr(AsyncSession, "commit", refused)
    assert recorder.calls == []


async def test_a_rolled_back_savepoint_drops_only_what_was_queued_inside_it(
    db: Database, recorder: Recorder
) -> None:
    async with db.unit_of_work(SYSTEM_CLI) as session:
        queue_events(session, [event(1)])
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                queue_events(session, [event(2)])
                async with session.begin_nested():  # released, but inside the rolled back
                    queue_events(session, [event(3)])
                raise RuntimeError("a clash: the savepoint rolls back")
        async with session.begin_nested():  # released: its events stay
            queue_events(session, [event(4)])
        queue_events(session, [event(5)])
    assert recorder.calls == [[1, 4, 5]]


async def test_a_unit_of_work_without_events_does_not_call_the_publisher(
    db: Database, recorder: Recorder
) -> None:
    async with db.unit_of_work(SYSTEM_CLI):
        pass
    assert recorder.calls == []
