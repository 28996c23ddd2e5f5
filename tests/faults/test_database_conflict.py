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
from cmschat.chat.models import Mention, Message, RoomEvent
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


async def _running(context: AppContext, statements: tuple[str, ...]) -> bool:
    """Whether a connection runs a statement starting one of these ways (blocked: the purge
    is paused).

    The process list, not ``innodb_lock_waits``: MariaDB shows no such wait there."""
    async with context.db.unit_of_work(read_only=True) as session:
        infos = await session.scalars(
            text("SELECT info FROM information_schema.processlist WHERE info IS NOT NULL")
        )
        return any(info.startswith(statements) for info in infos)


async def _edit_racing_the_purge(
    client: httpx.AsyncClient,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
    *,
    author: dict[str, str],
    room: int,
    doomed: list[dict[str, Any]],
    pause_before: str,
    content: str,
    edit_waits_in: tuple[str, ...],
) -> httpx.Response:
    """Purge ``doomed``; just before its first DELETE from table ``pause_before``, edit the
    first of them to ``content`` and resume once the edit runs one of ``edit_waits_in``
    (waiting for the purge's locks). The edit's answer."""
    target = doomed[0]
    edit: asyncio.Task[httpx.Response] | None = None

    async with context.db.unit_of_work("system:test") as session:
        execute = session.execute

        async def paused(statement: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal edit
            if (
                edit is None
                and isinstance(statement, Delete)
                and statement.table.name == pause_before
            ):
                edit = asyncio.create_task(
                    client.patch(
                        f"/api/v1/messages/{target['id']}",
                        headers=author,
                        json={"content": content},
                    )
                )
                # Until the edit waits for the purge (polled: no guess at how long it takes).
                async with asyncio.timeout(LOCK_WAIT_SECONDS):
                    while not edit.done() and not await _running(context, edit_waits_in):
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
    return await edit


async def _doomed(client: httpx.AsyncClient, author: dict[str, str], room: int) -> list[Any]:
    return [
        await send(client, author, room, f"old news number {n} with @bob and several words")
        for n in range(PURGED)
    ]


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
    the room's row (its event's seq); the purge then removes the batch's mentions, one of
    which the edit holds: a cycle, which InnoDB ends by rolling back the edit, the lighter
    of the two."""
    a = await alice.login(client)
    room = await group(client, a, bob)
    doomed = await _doomed(client, a, room)
    ready_before = await client.get("/readyz")
    metrics_before = (await client.get("/metrics")).text
    caplog.set_level(logging.INFO)
    caplog.clear()

    answered = await _edit_racing_the_purge(
        client,
        context,
        monkeypatch,
        author=a,
        room=room,
        doomed=doomed,
        pause_before=Mention.__tablename__,
        content="edited, @bob",
        edit_waits_in=("UPDATE rooms SET last_seq",),
    )

    assert answered.status_code == 503, answered.text
    assert answered.json()["error"]["code"] == "database_conflict"
    assert answered.headers["Retry-After"] == "1"
    # The purge went through; the edit's retry finds the message gone.
    retried = await client.patch(
        f"/api/v1/messages/{doomed[0]['id']}", headers=a, json={"content": "edited, @bob"}
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


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_an_edit_of_a_message_the_purge_is_deleting_never_answers_500(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The purge has removed the batch's mentions, search entries and events and is about
    to delete the messages when the edit (which removes its mention of bob) starts.
    Unlocked, the edit read the message, waited for the purge's lock on that mention, went
    on after the purge's commit and indexed a message that no longer existed: a
    foreign-key error, answered 500. With the message's row read ``FOR UPDATE`` first, the
    edit waits for the purge there and then finds the message gone: 404."""
    a = await alice.login(client)
    room = await group(client, a, bob)
    doomed = await _doomed(client, a, room)

    answered = await _edit_racing_the_purge(
        client,
        context,
        monkeypatch,
        author=a,
        room=room,
        doomed=doomed,
        pause_before=Message.__tablename__,
        content="edited",
        # Where the edit waits for the purge: its locking read; unlocked, the mention.
        edit_waits_in=("SELECT messages.id", "DELETE FROM mentions WHERE mentions.message_id ="),
    )

    assert answered.status_code == 404, answered.text


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
