"""MariaDB: several statements in as few round trips as they allow (``run_steps``), for
``driver_sql.Driver.steps``.

asyncmy runs one statement per round trip: a query sent, the event loop woken with the
answer, the writer's task resumed. A send batch was ~10 of them before its ``COMMIT``,
and the writer spent its time waiting on them, not on the server (which executes each in
tens of microseconds). Here the statements whose parameters are known when the trip is
sent go together as one multi-statement ``COM_QUERY``, their results read in order with
``nextset()``. A statement whose parameters are made from rows (a function of the
statements before it) can join the trip only when none of the statements waiting in it
returns rows (a write without ``RETURNING``: its rows are known to be none); otherwise the
trip is sent first and it starts the next.

The parameters are bound by the driver itself (``Cursor.mogrify``, the same escaping
``Cursor.execute`` applies to every statement on this text protocol); this module only
joins the bound statements with ``;``. A ``many`` step is sent as asyncmy's ``executemany``
sends it: one multi-row ``INSERT`` (asyncmy's own pattern, ``RE_INSERT_VALUES``) or one
statement per row.

MariaDB stops a multi-statement at the first statement that fails: its error is the last
result, the statements after it are never executed, and those before it stay done inside
the transaction (only the failing statement is rolled back, as when they are sent one by
one), so the unit of work's rollback undoes the lot as before. asyncmy always connects with
``CLIENT_MULTI_STATEMENTS`` (docs/security.md says why that is safe here). One thing is
lost: asyncmy logs a statement's warnings (``SHOW WARNINGS``) only for the last statement
of a query, so those of the statements before it go unlogged.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from typing import Any

from cmschat.db.steps import Ran, Step

TRIP_BYTES = 1_000_000
"""Most SQL a round trip gathers from several steps, in UTF-8 bytes as the server's
``max_allowed_packet`` counts them: a step that would take the trip past it starts the
next. asyncmy's own cap on one ``executemany`` statement, below ``max_allowed_packet`` even
where it is set to 1 MiB (16 MiB by default). It bounds each statement, not a trip: one
step's statements (a multi-row ``INSERT`` cut in parts of at most this) always go in one
trip, however many; a send batch's largest step, its messages, is bounded by the group
commit's byte budget (``group_commit.MAX_BATCH_BYTES``), not by this."""

_Waiting = tuple[bool, list[str]]
"""A step of the trip being gathered: whether it is a ``many``, and its bound statements
(none: a ``many`` with nothing to run, skipped)."""


@functools.cache
def _insert_values() -> re.Pattern[str]:
    """asyncmy's pattern of an ``INSERT`` its ``executemany`` sends as one multi-row
    statement (imported on first use: a process on SQLite never loads the driver)."""
    from asyncmy.cursors import RE_INSERT_VALUES

    pattern: re.Pattern[str] = RE_INSERT_VALUES
    return pattern


def _size(statement: str) -> int:
    """``statement``'s length in UTF-8 bytes (encoded only when it is not ASCII)."""
    return len(statement) if statement.isascii() else len(statement.encode())


def _bound(cursor: Any, sql: str, parameters: Any, many: bool) -> list[str]:
    """A step's statements with their parameters bound by the driver (``mogrify``): one, or
    for a ``many`` a multi-row ``INSERT`` (in parts of at most ``TRIP_BYTES``) or one
    per row."""
    if not many:
        return [cursor.mogrify(sql, parameters)]
    insert = _insert_values().match(sql)
    if insert is None:
        return [cursor.mogrify(sql, row) for row in parameters]
    prefix = cursor.mogrify(insert.group(1), ())
    postfix = cursor.mogrify(insert.group(3) or "", ())
    values = insert.group(2).rstrip()
    statements: list[str] = []
    rows: list[str] = []
    size = 0
    for row in parameters:
        bound = cursor.mogrify(values, row)
        length = _size(bound)
        if rows and size + length > TRIP_BYTES:
            statements.append(prefix + ",".join(rows) + postfix)
            rows, size = [], 0
        rows.append(bound)
        size += length + 1
    statements.append(prefix + ",".join(rows) + postfix)
    return statements


async def run_steps(adapter: Any, steps: Sequence[Step], reads: Sequence[bool]) -> Ran:
    """``steps`` in order, in as few round trips as their parameters allow, stopping at the
    first that fails; ``reads``: whether each returns rows (``Statement.reads``).

    A statement's time is its share of its round trip: from the end of the statement before
    it in the trip (the first: from sending the trip) to its own result read, so the times
    of a trip add up to the trip's.
    """
    async with adapter._execute_mutex:
        cursor = adapter._connection.cursor()
        try:
            return await _run(cursor, steps, reads)
        finally:
            await cursor.close()


async def _run(cursor: Any, steps: Sequence[Step], reads: Sequence[bool]) -> Ran:
    rows: list[list[Any]] = []
    took: list[float | None] = []
    waiting: list[_Waiting] = []
    size = 0
    reading = False  # a statement waiting in the trip returns rows
    for (sql, given, many), returns in zip(steps, reads, strict=True):
        if callable(given) and reading:
            failed = await _send(cursor, waiting, rows, took)
            if failed is not None:
                return rows, took, failed
            waiting, size, reading = [], 0, False
        started = time.perf_counter()
        try:
            # The statements waiting in the trip return no rows (or this would not be made
            # now), so theirs are known: none.
            parameters = given(rows + [[]] * len(waiting)) if callable(given) else given
            bound = _bound(cursor, sql, parameters, many) if parameters or not many else []
        except Exception as raised:  # this step's, once those before it ran
            failed = await _send(cursor, waiting, rows, took)
            if failed is not None:
                return rows, took, failed
            took.append(time.perf_counter() - started)
            return rows, took, raised
        length = sum(map(_size, bound))
        if waiting and size + length > TRIP_BYTES:
            failed = await _send(cursor, waiting, rows, took)
            if failed is not None:
                return rows, took, failed
            waiting, size, reading = [], 0, False
        waiting.append((many, bound))
        size += length
        reading = reading or (returns and bool(bound))
    return rows, took, await _send(cursor, waiting, rows, took)


async def _send(
    cursor: Any, waiting: Sequence[_Waiting], rows: list[list[Any]], took: list[float | None]
) -> BaseException | None:
    """One round trip with the ``waiting`` steps' statements; each step's rows and time
    appended to ``rows`` and ``took`` up to the first that fails, whose error is returned."""
    statements = [statement for _many, bound in waiting for statement in bound]
    sent = False
    mark = time.perf_counter()
    for many, bound in waiting:
        if not bound:
            rows.append([])
            took.append(None)
            continue
        found: list[Any] = []
        try:
            for _statement in bound:
                if not sent:
                    await cursor.execute(";".join(statements))
                    sent = True
                elif not await cursor.nextset():
                    raise RuntimeError("the server answered fewer statements than were sent")
                if not many:
                    found = list(await cursor.fetchall() or ())
        except Exception as error:
            took.append(time.perf_counter() - mark)
            return error
        now = time.perf_counter()
        took.append(now - mark)
        mark = now
        rows.append(found)
    return None
