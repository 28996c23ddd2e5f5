"""``cmschat audit verify`` against a trail tampered with directly in SQL.

The attacker here has the database owner's rights: they drop the triggers first, so each
test gets a database of its own.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from cmschat.audit import service as audit
from cmschat.audit.chain import event_hash, fields_of
from cmschat.audit.models import AuditEvent
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.migrate import run_migrations
from cmschat.db.session import Database, create_engine
from tests import support
from tests.processes import clean_env, cmschat

EVENTS = 6  # the tamper statements below name these ids


@pytest.fixture(params=support.BACKENDS)
async def trail(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh migrated database holding six chained events, its triggers dropped."""
    if request.param == "sqlite":
        url = support.sqlite_url(tmp_path / "tamper.db")
    else:
        support.mariadb_available()
        url = await support.create_mariadb_database()
    db = audited(Database(create_engine(url), FakeClock()))
    try:
        await run_migrations(db.engine)
        for n in range(1, EVENTS + 1):
            async with db.unit_of_work(SYSTEM_CLI) as session:
                audit.record(
                    session,
                    action="user.role_changed",
                    target_type="user",
                    target_id=n,
                    changes={"role": ["member", "agent"]},
                )
        async with db.engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER audit_events_refuse_update"))
            await connection.execute(text("DROP TRIGGER audit_events_refuse_delete"))
        yield db
    finally:
        await db.dispose()
        if request.param == "mariadb":
            await support.drop_mariadb_database(url)


def verify(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    url = db.engine.url.render_as_string(hide_password=False)
    return cmschat(Path.cwd(), "audit", "verify", *args, env=clean_env(CMSCHAT_DATABASE_URL=url))


async def tamper(db: Database, *statements: str) -> None:
    async with db.engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))


def assert_broken_at(result: subprocess.CompletedProcess[str], event_id: int, why: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"broken at event {event_id}:" in lines[0]
    assert why in lines[0]
    assert "Traceback" not in result.stderr


async def test_an_untouched_trail_verifies(trail: Database) -> None:
    result = verify(trail)
    assert result.returncode == 0, result.stderr
    assert f"intact: {EVENTS} events, head {EVENTS} " in result.stdout


async def test_an_edited_event_is_named(trail: Database) -> None:
    await tamper(
        trail, 'UPDATE audit_events SET changes = \'{"role":["member","admin"]}\' WHERE id = 3'
    )
    assert_broken_at(verify(trail), 3, "altered")


async def test_a_deleted_event_is_named(trail: Database) -> None:
    await tamper(trail, "DELETE FROM audit_events WHERE id = 3")
    assert_broken_at(verify(trail), 3, "missing")


async def test_an_inserted_event_breaks_the_next_link(trail: Database) -> None:
    """The forged row carries a correct hash of its own; the row after it no longer links."""
    await tamper(
        trail,
        "UPDATE audit_events SET id = -id WHERE id > 2",
        "UPDATE audit_events SET id = 1 - id WHERE id < 0",
        "UPDATE audit_head SET last_id = last_id + 1",
    )
    async with trail.unit_of_work(SYSTEM_CLI) as session:
        second = await session.scalar(select(AuditEvent).where(AuditEvent.id == 2))
        assert second is not None
        forged = AuditEvent(
            id=3,
            occurred_at=second.occurred_at,
            actor="user:1",
            actor_id=1,
            actor_name="admin",
            action="user.role_changed",
            target_type="user",
            target_id="99",
            request_id=None,
            client_address=None,
            changes='{"role":["member","admin"]}',
            prev_hash=second.hash,
        )
        forged.hash = event_hash(fields_of(forged))
        session.add(forged)
    assert_broken_at(verify(trail), 4, "prev_hash does not match")


async def test_reordered_events_are_named(trail: Database) -> None:
    await tamper(
        trail,
        "UPDATE audit_events SET id = 0 WHERE id = 3",
        "UPDATE audit_events SET id = 3 WHERE id = 4",
        "UPDATE audit_events SET id = 4 WHERE id = 0",
    )
    assert_broken_at(verify(trail), 3, "prev_hash does not match")


async def test_events_cut_off_the_end_are_noticed(trail: Database) -> None:
    await tamper(trail, "DELETE FROM audit_events WHERE id = 6")
    assert_broken_at(verify(trail), EVENTS, "cut off the end")


async def test_a_rewritten_chain_fails_against_a_kept_head(trail: Database) -> None:
    """Rebuilding every hash after an edit fools the chain, not a head kept elsewhere."""
    async with trail.unit_of_work(SYSTEM_CLI) as session:
        kept = await session.scalar(select(AuditEvent).where(AuditEvent.id == EVENTS))
        assert kept is not None
        kept_head = f"{kept.id}:{kept.hash}"
    await tamper(trail, "UPDATE audit_events SET target_id = '42' WHERE id = 2")
    async with trail.unit_of_work(SYSTEM_CLI) as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        previous = rows[0].hash
        for row in rows[1:]:
            row.prev_hash = previous
            row.hash = event_hash(fields_of(row))
            previous = row.hash
        await session.execute(text("UPDATE audit_head SET last_hash = :h"), {"h": previous})
    assert verify(trail).returncode == 0  # the chain alone cannot tell
    assert_broken_at(verify(trail, "--expect-head", kept_head), EVENTS, "rewritten")


def test_a_malformed_kept_head_is_a_one_line_error(tmp_path: Path) -> None:
    url = support.sqlite_url(tmp_path / "empty.db")
    result = cmschat(
        tmp_path,
        "audit",
        "verify",
        "--expect-head",
        "nonsense",
        env=clean_env(CMSCHAT_DATABASE_URL=url),
    )
    assert result.returncode == 1
    assert "ID:HASH" in result.stderr and "Traceback" not in result.stderr
