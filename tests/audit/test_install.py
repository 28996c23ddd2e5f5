"""The audit trail is hooked on by the start-up, not by the data layer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from cmschat.audit import service as audit
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_CLI, user_actor
from cmschat.db.session import Database, create_engine
from cmschat.jobs.models import JobLease
from tests import support


@pytest.fixture
async def plain_db(database_url: str) -> AsyncIterator[Database]:
    """A Database as the data layer builds it: no audit trail installed."""
    db = Database(create_engine(database_url), FakeClock())
    try:
        yield db
    finally:
        await db.engine.dispose()


async def test_a_database_without_the_trail_still_reads_and_writes(plain_db: Database) -> None:
    async with plain_db.unit_of_work(SYSTEM_CLI) as session:
        session.add(JobLease(name="plain"))
    async with plain_db.unit_of_work(SYSTEM_CLI) as session:
        names = (await session.scalars(select(JobLease.name))).all()
    assert names == ["plain"]
    assert await support.audit_events(plain_db) == []


async def test_recording_without_the_trail_fails_loudly(plain_db: Database) -> None:
    """An event queued where no commit hook would write it must not vanish silently."""
    async with plain_db.unit_of_work(SYSTEM_CLI) as session:
        with pytest.raises(RuntimeError, match="no audit trail"):
            audit.record(session, action="user.created", target_type="user", target_id=1)


async def test_the_trail_is_per_database_and_installs_once(database_url: str) -> None:
    plain = Database(create_engine(database_url), FakeClock())
    kept = audited(audited(Database(create_engine(database_url), FakeClock())))
    try:
        async with kept.unit_of_work(SYSTEM_CLI) as session:
            audit.record(session, action="user.created", target_type="user", target_id=1)
        events = await support.audit_events(plain)
        assert [(e.action, e.target_id) for e in events] == [("user.created", "1")]
        async with plain.unit_of_work(SYSTEM_CLI) as session:
            with pytest.raises(RuntimeError, match="no audit trail"):
                audit.record(session, action="user.created", target_type="user", target_id=2)
    finally:
        await plain.engine.dispose()
        await kept.engine.dispose()


async def test_a_user_actor_without_a_name_is_recorded_by_id_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit does not reach into accounts for the name; the slip shows, the change commits."""
    db = audited(Database(create_engine(database_url), FakeClock()))
    try:
        async with db.unit_of_work(user_actor(42)) as session:
            audit.record(session, action="user.created", target_type="user", target_id=7)
        [event] = await support.audit_events(db)
        assert (event.actor_id, event.actor_name) == (42, "#42")
        assert "user actor 42 has no name" in caplog.text
    finally:
        await db.engine.dispose()
