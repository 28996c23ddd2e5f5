"""Statements run through the driver (db/driver_sql.py) are timed like any other and fail
as SQLAlchemy's errors, so the SQL metrics, the slow-query log, spans and the outage
mapping see them whichever path ran them."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import bindparam, event, text
from sqlalchemy.exc import IntegrityError

from cmschat.context import AppContext
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
