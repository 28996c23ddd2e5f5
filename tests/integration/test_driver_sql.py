"""Statements run through the driver (db/driver_sql.py) are timed like any other and fail
as SQLAlchemy's errors, so the SQL metrics, the slow-query log, spans and the outage
mapping see them whichever path ran them."""

from __future__ import annotations

from typing import Any

import asyncmy.connection
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import bindparam, event, text
from sqlalchemy.exc import IntegrityError

from cmschat.context import AppContext
from cmschat.db import mariadb_trips
from cmschat.db.driver_sql import Statement, driver_of
from tests.support import NamedUser

COPY_USER = Statement(
    lambda _dialect: text("INSERT INTO users SELECT * FROM users WHERE id = :id").bindparams(
        bindparam("id")
    ),
    ["id"],
)
USERNAME = Statement(
    lambda _dialect: text("SELECT username FROM users WHERE id = :id").bindparams(bindparam("id")),
    ["id"],
)
TOUCH = Statement(
    lambda _dialect: text("UPDATE users SET username = username WHERE id = :id").bindparams(
        bindparam("id")
    ),
    ["id"],
)


def counted(operation: str) -> float:
    """How many statements of ``operation`` the SQL histogram has timed so far."""
    value = REGISTRY.get_sample_value(
        "cmschat_db_query_duration_seconds_count", {"operation": operation}
    )
    return value or 0.0


async def test_a_statement_through_the_driver_is_timed_once(
    context: AppContext, alice: NamedUser
) -> None:
    before = counted("SELECT")
    async with context.db.unit_of_work("system:test") as session:
        driver = await driver_of(session)
        rows = await driver.rows(USERNAME, (alice.id,))
        assert counted("SELECT") == before + 1
    assert rows == [("alice",)]


async def test_a_duplicate_through_the_driver_fails_as_sqlalchemys_integrity_error(
    context: AppContext, alice: NamedUser
) -> None:
    before = counted("INSERT")
    with pytest.raises(IntegrityError) as raised:
        async with context.db.unit_of_work("system:test") as session:
            driver = await driver_of(session)
            await driver.rows(COPY_USER, (alice.id,))
    # The statement is named, its parameters are not (they may hold secrets).
    assert "INSERT INTO users" in str(raised.value)
    assert "[parameters" not in str(raised.value)
    assert counted("INSERT") == before  # a failure is not a timed statement
    async with context.db.unit_of_work("system:test") as session:
        assert await (await driver_of(session)).rows(USERNAME, (alice.id,)) == [("alice",)]


async def test_statements_sharing_a_trip_are_each_timed_and_stop_at_the_first_failure(
    context: AppContext, alice: NamedUser
) -> None:
    selects, inserts, updates = counted("SELECT"), counted("INSERT"), counted("UPDATE")
    announced: list[str] = []

    def seen(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        announced.append(sql.split(None, 1)[0])

    engine = context.db.engine.sync_engine
    async with context.db.unit_of_work("system:test") as session:
        driver = await driver_of(session)
        event.listen(engine, "before_cursor_execute", seen)
        try:
            found = await driver.steps(
                [
                    (USERNAME, (alice.id,), False),
                    (TOUCH, [], True),  # nothing to run: skipped, not announced
                    (TOUCH, lambda rows: [(alice.id,)] * (len(rows[0]) + 1), True),  # 2, from rows
                ]
            )
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert found == [[("alice",)], [], []]
        assert announced == ["SELECT", "UPDATE"]
        assert (counted("SELECT"), counted("UPDATE")) == (selects + 1, updates + 1)
    with pytest.raises(IntegrityError) as raised:
        async with context.db.unit_of_work("system:test") as session:
            driver = await driver_of(session)
            await driver.steps(
                [
                    (USERNAME, (alice.id,), False),
                    (COPY_USER, (alice.id,), False),  # a duplicate: fails
                    (USERNAME, (alice.id,), False),  # never runs
                ]
            )
    assert "INSERT INTO users" in str(raised.value)
    assert "[parameters" not in str(raised.value)
    assert counted("SELECT") == selects + 2  # the statement after the failure never ran
    assert counted("INSERT") == inserts


NOTE = Statement(
    lambda _dialect: text("INSERT INTO notes (body, n) VALUES (:body, :n)").bindparams(
        bindparam("body"), bindparam("n")
    ),
    ["body", "n"],
)
NOTES_TABLE = Statement(
    lambda _dialect: text("CREATE TEMPORARY TABLE notes (body VARCHAR(50), n INT)"), []
)
NOTES = Statement(lambda _dialect: text("SELECT body, n FROM notes ORDER BY n"), [])
AFTER = Statement(lambda _dialect: text("SET @cmschat_after = 1"), [])
AFTER_READ = Statement(lambda _dialect: text("SELECT @cmschat_after"), [])
RENAME = Statement(
    lambda _dialect: text("UPDATE users SET display_name = :name WHERE id = :id").bindparams(
        bindparam("name"), bindparam("id")
    ),
    ["name", "id"],
)
DISPLAY_NAME = Statement(
    lambda _dialect: text("SELECT display_name FROM users WHERE id = :id").bindparams(
        bindparam("id")
    ),
    ["id"],
)


def queries_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every query asyncmy sends from now on (one round trip each)."""
    sent: list[str] = []
    real = asyncmy.connection.Connection.query

    async def query(self: Any, sql: Any, unbuffered: bool = False) -> Any:
        sent.append(sql.decode() if isinstance(sql, bytes) else sql)
        return await real(self, sql, unbuffered)

    monkeypatch.setattr(asyncmy.connection.Connection, "query", query)
    return sent


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_round_trip_of_several_statements_stops_where_one_fails(
    context: AppContext, alice: NamedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB executes a multi-statement query up to its first failing statement: those
    before it stay done in the transaction (until the unit of work rolls back), none after
    it runs, and the connection goes on, as when they were sent one by one."""
    sent = queries_sent(monkeypatch)
    with pytest.raises(IntegrityError):
        async with context.db.unit_of_work("system:test") as session:
            driver = await driver_of(session)
            with pytest.raises(IntegrityError) as raised:
                await driver.steps(
                    [
                        (RENAME, [("Al; 'Ice'", alice.id)], True),
                        (COPY_USER, (alice.id,), False),  # a duplicate: fails
                        (AFTER, (), False),  # never runs
                    ]
                )
            assert "INSERT INTO users" in str(raised.value)
            assert len(sent) == 1 and sent[0].count(";") == 3  # one round trip (one ; quoted)
            assert await driver.rows(DISPLAY_NAME, (alice.id,)) == [("Al; 'Ice'",)]
            assert await driver.rows(AFTER_READ, ()) == [(None,)]
            raise raised.value
    async with context.db.unit_of_work("system:test") as session:
        assert await (await driver_of(session)).rows(DISPLAY_NAME, (alice.id,)) == [("Alice",)]


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_statements_past_a_round_trips_size_go_in_the_next(
    context: AppContext, alice: NamedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round trip carries at most ``TRIP_BYTES`` of SQL (the server refuses a packet
    over ``max_allowed_packet``); a multi-row ``INSERT`` is cut in parts as asyncmy cuts it."""
    monkeypatch.setattr(mariadb_trips, "TRIP_BYTES", 60)
    async with context.db.unit_of_work("system:test") as session:
        driver = await driver_of(session)
        await driver.rows(NOTES_TABLE, ())
        sent = queries_sent(monkeypatch)
        found = await driver.steps(
            [
                (RENAME, [(f"name {n}", alice.id) for n in range(4)], True),
                (DISPLAY_NAME, (alice.id,), False),
                (NOTE, lambda rows: [(rows[1][0][0], n) for n in range(6)], True),
                (NOTES, (), False),
            ]
        )
        assert found[:2] == [[], [("name 3",)]]
        assert found[3] == [("name 3", n) for n in range(6)]
        # The renames (each ~60 characters) in one trip, the read in the next; the notes
        # made from its row in a third, as two INSERTs of three rows; their read, past the
        # size, in a fourth.
        assert [query.count(";") + 1 for query in sent] == [4, 1, 2, 1]
        assert sent[2].count("INSERT INTO notes") == 2
        await driver.rows(Statement(lambda _dialect: text("DROP TEMPORARY TABLE notes"), []), ())


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_round_trips_size_counts_bytes_not_characters(
    context: AppContext, alice: NamedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``max_allowed_packet`` counts bytes: text of four-byte characters fills a trip four
    times as fast as ASCII, and statements past the cap go in the next trip."""
    monkeypatch.setattr(mariadb_trips, "TRIP_BYTES", 200)
    name = "\N{GRINNING FACE}" * 10  # 10 characters, 40 bytes
    async with context.db.unit_of_work("system:test") as session:
        driver = await driver_of(session)
        sent = queries_sent(monkeypatch)
        found = await driver.steps(
            [(RENAME, [(name + str(n), alice.id)], True) for n in range(4)]
            + [(DISPLAY_NAME, (alice.id,), False)]
        )
        assert found[-1] == [(name + "3",)]
    # Each rename is ~60 characters but ~90 bytes: two to a trip, not all four.
    assert all(len(query.encode()) <= 200 for query in sent)
    assert [query.count(";") + 1 for query in sent][:2] == [2, 2]


@pytest.mark.parametrize("database_url", ["sqlite", "mariadb"], indirect=True)
async def test_cursor_listeners_of_the_engine_and_the_connection_all_run_in_order(
    context: AppContext, alice: NamedUser
) -> None:
    """Each statement run by the driver reaches every ``before``/``after_cursor_execute``
    listener, the connection's then the engine's as SQLAlchemy calls them, and one
    added or removed between runs is seen by the next run."""
    calls: list[str] = []

    def listener(name: str) -> Any:
        def heard(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
            verb = sql.split(None, 1)[0]
            if verb in ("SELECT", "UPDATE"):  # not the unit of work's BEGIN and COMMIT
                calls.append(f"{name} {verb}")

        return heard

    engine = context.db.engine.sync_engine
    added = [
        (engine, "before_cursor_execute", listener("engine before")),
        (engine, "after_cursor_execute", listener("engine after")),
    ]
    for target, name, fn in added:
        event.listen(target, name, fn)
    try:
        async with context.db.unit_of_work("system:test") as session:
            driver = await driver_of(session)
            await driver.rows(USERNAME, (alice.id,))
            own = (await session.connection()).sync_connection
            assert own is not None
            late = [
                (own, "before_cursor_execute", listener("connection before")),
                (own, "after_cursor_execute", listener("connection after")),
            ]
            for target, name, fn in late:
                event.listen(target, name, fn)
            added += late
            await driver.steps([(USERNAME, (alice.id,), False), (TOUCH, (alice.id,), False)])
            event.remove(*added.pop(0))  # the engine's before
            await driver.rows(USERNAME, (alice.id,))
    finally:
        for target, name, fn in added:
            event.remove(target, name, fn)
    assert calls == [
        "engine before SELECT",
        "engine after SELECT",
        *("connection before SELECT", "engine before SELECT"),
        *("connection before UPDATE", "engine before UPDATE"),
        *("connection after SELECT", "engine after SELECT"),
        *("connection after UPDATE", "engine after UPDATE"),
        "connection before SELECT",
        *("connection after SELECT", "engine after SELECT"),
    ]
