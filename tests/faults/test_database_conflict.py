"""A transaction that collides with another is no outage: a real MariaDB deadlock between a
retention purge and an edit of a message it removes is answered 503 ``database_conflict``
with ``Retry-After``, counted and logged as a conflict, and leaves readiness alone."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text
from sqlalchemy import exc as sa
from sqlalchemy.sql.dml import Delete

from cmschat.chat import expiry
from cmschat.chat.models import Mention, RoomEvent
from cmschat.context import AppContext
from cmschat.observability import outages
from tests.api.test_messages import group, send
from tests.support import NamedUser

PURGED = 20
"""Messages in the purge's batch, each mentioning bob: the mentions it deletes outweigh
the edit's changes, so InnoDB (which rolls back the lighter transaction) ends the edit, as
it would against a real purge's batch."""
LOCK_WAIT_SECONDS = 10.0


def _counted(metrics: str, name: str, code: str) -> float:
    found = re.search(rf'^{name}{{code="{code}"}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _edit_waits_for_a_lock(context: AppContext) -> bool:
    """Whether the edit is running its room's seq update (blocked: the purge holds the row).

    The process list, not ``innodb_lock_waits``: MariaDB shows no such wait there."""
    async with context.db.unit_of_work(read_only=True) as session:
        waiting = await session.scalar(
            text("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE :q"),
            {"q": "UPDATE rooms SET last_seq%"},
        )
    return bool(waiting)


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_an_edit_deadlocked_by_the_purge_is_a_conflict_not_an_outage(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The purge holds the room's row; the edit has re-indexed its message and waits for
    the room's row (its event's seq); the purge, having removed the batch's mentions, then
    removes the message's search entry, which the edit holds: a cycle, which InnoDB ends
    by rolling back the edit, the lighter of the two."""
    a = await alice.login(client)
    room = await group(client, a, bob)
    doomed = [
        await send(client, a, room, f"old news number {n} with @bob and several words")
        for n in range(PURGED)
    ]
    target = doomed[0]
    ready_before = await client.get("/readyz")
    metrics_before = (await client.get("/metrics")).text
    caplog.set_level(logging.INFO)
    caplog.clear()
    edit: asyncio.Task[httpx.Response] | None = None

    async with context.db.unit_of_work("system:test") as session:
        execute = session.execute

        async def paused(statement: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal edit
            if isinstance(statement, Delete) and statement.table.name == Mention.__tablename__:
                edit = asyncio.create_task(
                    client.patch(
                        f"/api/v1/messages/{target['id']}",
                        headers=a,
                        json={"content": "edited, @bob"},
                    )
                )
                # Until the edit waits for the purge (polled: no guess at how long it takes).
                async with asyncio.timeout(LOCK_WAIT_SECONDS):
                    while not edit.done() and not await _edit_waits_for_a_lock(context):
                        await asyncio.wait([edit], timeout=0.01)
                assert not edit.done(), edit.result().text
            return await execute(statement, *args, **kwargs)

        # A purge's batch has work behind it by then (a real one erases attachments
        # first): the events of the batch's sends, which it would delete anyway, go first.
        await session.execute(
            delete(RoomEvent).where(RoomEvent.message_id.in_([m["id"] for m in doomed]))
        )
        monkeypatch.setattr(session, "execute", paused)
        await expiry.delete_messages(
            session,
            room_id=room,
            message_ids=[m["id"] for m in doomed],
            through_seq=doomed[-1]["seq"],
        )
    assert edit is not None
    answered = await edit

    assert answered.status_code == 503, answered.text
    assert answered.json()["error"]["code"] == "database_conflict"
    assert answered.headers["Retry-After"] == "1"
    # The purge went through; the edit's retry finds the message gone.
    retried = await client.patch(
        f"/api/v1/messages/{target['id']}", headers=a, json={"content": "edited, @bob"}
    )
    assert retried.status_code == 404, retried.text

    conflicts = [r for r in caplog.records if r.name == "cmschat.database.conflict"]
    assert [r.levelno for r in conflicts] == [logging.WARNING]
    assert "database_conflict" in conflicts[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.name == "cmschat.outage"] == []
    metrics = (await client.get("/metrics")).text
    conflict = ("cmschat_database_conflicts_total", "database_conflict")
    outage = ("cmschat_dependency_errors_total", "database_unavailable")
    assert _counted(metrics, *conflict) == _counted(metrics_before, *conflict) + 1
    assert _counted(metrics, *outage) == _counted(metrics_before, *outage)
    ready_after = await client.get("/readyz")
    assert (ready_after.status_code, ready_after.json()) == (
        ready_before.status_code,
        ready_before.json(),
    )


class _MariaDBError(Exception):
    """What asyncmy raises: the protocol's error number first."""


def _raised(orig: Exception) -> sa.OperationalError:
    """``orig`` as SQLAlchemy raises it: wrapped, and its cause."""
    error = sa.OperationalError("UPDATE messages", {}, orig)
    error.__cause__ = orig
    return error


@pytest.mark.parametrize(
    ("orig", "code"),
    [
        (_MariaDBError(1213, "Deadlock found"), "database_conflict"),
        (_MariaDBError(1205, "Lock wait timeout exceeded"), "database_conflict"),
        (sqlite3.OperationalError("database is locked"), "database_busy"),
        (_MariaDBError(2013, "Lost connection to server during query"), "database_unavailable"),
    ],
)
def test_collisions_are_conflicts_and_a_lost_server_an_outage(orig: Exception, code: str) -> None:
    """Deadlock, lock-wait timeout and a locked SQLite are conflicts; a lost server is not."""
    outage = outages.classify(_raised(orig))
    assert outage is not None
    assert (outage.code, outage.conflict) == (code, code != "database_unavailable")
