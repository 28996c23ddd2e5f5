"""A transaction that collides with another is no outage: a real MariaDB deadlock between a
retention purge and an edit of a message it removes is answered 503 ``database_conflict``
with ``Retry-After``, counted and logged as a conflict, and leaves readiness alone."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
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
INNODB_TRX_REFRESH = 0.2
"""Between two looks at ``innodb_trx``: InnoDB refreshes the table's cache only when it
was not read for 0.1 s, so a closer poll sees the first look's transactions for ever."""


def _counted(metrics: str, name: str, code: str) -> float:
    found = re.search(rf'^{name}{{code="{code}"}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _waiting(context: AppContext, purge: int, statements: tuple[str, ...]) -> bool:
    """Whether a transaction waits for a lock the purge (connection id ``purge``) holds, in a
    statement starting one of these ways (the edit: the purge is paused, so nothing else
    here waits for it). Other tests on the shared server, running the same statements in
    their own databases, wait for their own transactions, never this purge."""
    async with context.db.unit_of_work(read_only=True) as session:
        queries = await session.scalars(
            text(
                "SELECT waiting.trx_query"
                " FROM information_schema.innodb_lock_waits AS waits"
                " JOIN information_schema.innodb_trx AS waiting"
                " ON waiting.trx_id = waits.requesting_trx_id"
                " JOIN information_schema.innodb_trx AS holding"
                " ON holding.trx_id = waits.blocking_trx_id"
                " WHERE waiting.trx_state = 'LOCK WAIT'"
                " AND holding.trx_mysql_thread_id = :purge"
            ),
            {"purge": purge},
        )
        return any(query is not None and query.startswith(statements) for query in queries)


async def _change_racing_the_purge(
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
    *,
    room: int,
    doomed: list[dict[str, Any]],
    pause_before: str,
    change: Callable[[], Awaitable[httpx.Response]],
    change_waits_in: tuple[str, ...],
) -> httpx.Response:
    """Purge ``doomed``; just before its first DELETE from table ``pause_before``, start
    ``change`` (an edit or delete of the first of them) and resume once it runs one of
    ``change_waits_in``, waiting for the purge's locks. The change's answer."""
    changing: asyncio.Task[httpx.Response] | None = None
    try:
        async with context.db.unit_of_work("system:test") as session:
            execute = session.execute
            purge = await session.scalar(text("SELECT CONNECTION_ID()"))

            async def paused(statement: Any, *args: Any, **kwargs: Any) -> Any:
                nonlocal changing
                if (
                    changing is None
                    and isinstance(statement, Delete)
                    and statement.table.name == pause_before
                ):
                    changing = asyncio.create_task(change())
                    # Until the change waits for the purge (polled: no guess at how long).
                    async with asyncio.timeout(LOCK_WAIT_SECONDS):
                        while not changing.done() and not await _waiting(
                            context, purge, change_waits_in
                        ):
                            await asyncio.wait([changing], timeout=INNODB_TRX_REFRESH)
                    assert not changing.done(), changing.result().text
                return await execute(statement, *args, **kwargs)

            # A purge's batch has work behind it by then (a real one erases attachments
            # first): the events of the batch's sends, which it would delete anyway, go
            # first.
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
    except BaseException:
        # A wait that timed out (or a purge that failed) leaves no request running.
        if changing is not None:
            changing.cancel()
            await asyncio.gather(changing, return_exceptions=True)
        raise
    assert changing is not None
    return await changing


def _edit(
    client: httpx.AsyncClient, author: dict[str, str], message: dict[str, Any], content: str
) -> Awaitable[httpx.Response]:
    return client.patch(
        f"/api/v1/messages/{message['id']}", headers=author, json={"content": content}
    )


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
    """The purge holds the room's row; the edit has locked its message's row, re-indexed
    it and waits for the room's row (its event's seq); the purge then removes the batch's
    mentions, whose trigger (``UPDATE messages SET page_tail = NULL WHERE id =
    OLD.message_id``) waits for the edit's lock on that message's row: a cycle, which
    InnoDB ends by rolling back the edit, the lighter of the two."""
    a = await alice.login(client)
    room = await group(client, a, bob)
    doomed = await _doomed(client, a, room)
    ready_before = await client.get("/readyz")
    metrics_before = (await client.get("/metrics")).text
    caplog.set_level(logging.INFO)
    caplog.clear()

    answered = await _change_racing_the_purge(
        context,
        monkeypatch,
        room=room,
        doomed=doomed,
        pause_before=Mention.__tablename__,
        change=lambda: _edit(client, a, doomed[0], "edited, @bob"),
        change_waits_in=("UPDATE rooms SET last_seq",),
    )

    assert answered.status_code == 503, answered.text
    assert answered.json()["error"]["code"] == "database_conflict"
    assert answered.headers["Retry-After"] == "1"
    # The purge went through; the edit's retry finds the message gone.
    retried = await client.patch(
        f"/api/v1/messages/{doomed[0]['id']}", headers=a, json={"content": "edited, @bob"}
    )
    assert retried.status_code == 404, retried.text

    conflicts = [r for r in caplog.records if r.name == "cmschat.db.conflict"]
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


_RACING_CHANGES = {
    # Where each waits for the purge: its locking read; unlocked, the edit waited on the
    # mention it removes, the delete on whichever of its writes met the purge's locks first.
    "edit": ("SELECT messages.id", "DELETE FROM mentions WHERE mentions.message_id ="),
    "delete": ("SELECT messages.id", "DELETE", "UPDATE", "INSERT"),
}


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
@pytest.mark.parametrize("kind", list(_RACING_CHANGES))
async def test_a_change_of_a_message_the_purge_is_deleting_answers_404_never_500(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """The purge has removed the batch's mentions, search entries and events and is about
    to delete the messages when the edit (which removes its mention of bob) or the delete
    starts. Unlocked, the edit read the message, waited for the purge's lock on that
    mention, went on after the purge's commit and indexed a message that no longer
    existed (a foreign-key error, answered 500); the delete read the row, waited for the
    purge's locks and then updated a row that no longer existed (a 500). With the
    message's row read ``FOR UPDATE`` first, each waits for the purge there and then finds
    the message gone: 404."""
    a = await alice.login(client)
    room = await group(client, a, bob)
    doomed = await _doomed(client, a, room)

    def change() -> Awaitable[httpx.Response]:
        if kind == "edit":
            return _edit(client, a, doomed[0], "edited")
        return client.delete(f"/api/v1/messages/{doomed[0]['id']}", headers=a)

    answered = await _change_racing_the_purge(
        context,
        monkeypatch,
        room=room,
        doomed=doomed,
        pause_before=Message.__tablename__,
        change=change,
        change_waits_in=_RACING_CHANGES[kind],
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
    ("orig", "code", "conflict"),
    [
        (_MariaDBError(1213, "Deadlock found"), "database_conflict", True),
        (_MariaDBError(1205, "Lock wait timeout exceeded"), "database_conflict", True),
        (sqlite3.OperationalError("database is locked"), "database_busy", False),
        (_MariaDBError(2013, "Lost connection to server"), "database_unavailable", False),
    ],
)
def test_collisions_are_conflicts_and_a_lost_server_or_a_locked_sqlite_an_outage(
    orig: Exception, code: str, conflict: bool
) -> None:
    """Deadlock and lock-wait timeout are conflicts; a lost server is an outage, and so is
    a locked SQLite (a write waited past its bound: the instance lacks write capacity)."""
    outage = outages.classify(_raised(orig))
    assert outage is not None
    assert (outage.code, outage.conflict) == (code, conflict)


def _raised_while_handling_a_deadlock(error: Exception) -> Exception:
    try:
        raise _raised(_MariaDBError(1213, "Deadlock found"))
    except sa.OperationalError:
        try:
            raise error
        except Exception as raised:
            return raised


def test_an_error_raised_while_handling_a_deadlock_is_that_error() -> None:
    """A pool timeout met while handling a deadlock (the rollback's reconnect, say) is the
    pool exhausted, and a bug there stays a 500: neither is hidden as a conflict."""
    timed_out = _raised_while_handling_a_deadlock(sa.TimeoutError("QueuePool limit"))
    bug = _raised_while_handling_a_deadlock(KeyError("room"))
    assert isinstance(timed_out.__context__, sa.OperationalError)

    assert outages.classify(timed_out) is outages.DATABASE_POOL
    assert outages.classify(bug) is None
    assert outages.classify(timed_out.__context__) is outages.DATABASE_CONFLICT


def test_a_deadlock_raised_from_is_a_conflict() -> None:
    """An error explicitly raised from a deadlock (``raise ... from``) still is one."""
    deadlock = _raised(_MariaDBError(1213, "Deadlock found"))
    wrapper = RuntimeError("unit of work failed")
    wrapper.__cause__ = deadlock
    outage = outages.classify(wrapper)
    assert outage is outages.DATABASE_CONFLICT


def test_a_locked_sqlite_is_logged_and_counted_as_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``database_busy``: an error by ``cmschat.outage`` and a dependency error, not a
    conflict's warning."""
    log = outages.OutageLog()
    before = _sample("cmschat_dependency_errors_total")
    conflicts = _sample("cmschat_database_conflicts_total")

    log.seen(outages.DATABASE_BUSY, sqlite3.OperationalError("database is locked"), "POST /x")

    assert [(r.name, r.levelno) for r in caplog.records] == [("cmschat.outage", logging.ERROR)]
    assert _sample("cmschat_dependency_errors_total") == before + 1
    assert _sample("cmschat_database_conflicts_total") == conflicts


def _sample(counter: str) -> float:
    return REGISTRY.get_sample_value(counter, {"code": "database_busy"}) or 0.0


def test_a_bug_raised_while_handling_an_outage_stays_a_bug() -> None:
    """A plain error raised while handling Redis or SQLite failing is a 500 with its trace,
    not passed off as the outage; a library's own error raised there still is the outage."""

    def raised_while_handling(first: Exception, second: Exception) -> Exception:
        try:
            raise first
        except type(first):
            try:
                raise second
            except Exception as raised:
                return raised

    redis_down = RedisConnectionError("Connection refused")
    assert outages.classify(raised_while_handling(redis_down, KeyError("room"))) is None
    locked = sqlite3.OperationalError("database is locked")
    assert outages.classify(raised_while_handling(locked, AttributeError("x"))) is None
    wrapped = raised_while_handling(locked, sa.ResourceClosedError("closed"))
    assert outages.classify(wrapped) is outages.DATABASE_BUSY
    explicit = RuntimeError("unit of work failed")
    explicit.__cause__ = redis_down
    assert outages.classify(explicit) is outages.BROKER
