"""Running several statements as one unit, in order, up to the first that fails, in one
trip to SQLite's driver thread (``sqlite_driver.run_steps``), for
``driver_sql.Driver.steps``; MariaDB's round trips (``mariadb_trips``) bring back the same
``Ran``."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, cast

Step = tuple[str, Any, bool]
"""One statement of a trip that runs several: its SQL, its parameters (or a function of the
rows of the statements before it), and whether many."""
Ran = tuple[list[list[Any]], list[float | None], BaseException | None]
"""What such a trip brings back: each statement's rows (None as []), the seconds each took
(None: a ``many`` with nothing to run), and the error of the statement that failed (the
last one timed; none run after it)."""


def _plan(steps: Sequence[Step]) -> Generator[tuple[str, Any, bool], list[Any], Ran]:
    """The bookkeeping of running ``steps``: yields each statement to run (with its
    parameters worked out), is sent its rows or thrown its error, and returns what ran."""
    rows: list[list[Any]] = []
    took: list[float | None] = []
    for operation, given, many in steps:
        started = time.perf_counter()
        try:
            parameters = given(rows) if callable(given) else given
            if many and not parameters:
                rows.append([])
                took.append(None)
                continue
            found = yield operation, parameters, many
        except Exception as error:
            took.append(time.perf_counter() - started)
            return rows, took, error
        took.append(time.perf_counter() - started)
        rows.append(found)
    return rows, took, None


def run_each(steps: Sequence[Step], run: Callable[[str, Any, bool], list[Any]]) -> Ran:
    """The statements one after the other with ``run``, up to the first error."""
    plan = _plan(steps)
    try:
        step = next(plan)
        while True:
            try:
                found = run(*step)
            except Exception as error:
                step = plan.throw(error)
            else:
                step = plan.send(found)
    except StopIteration as ended:
        return cast(Ran, ended.value)


def then_commit(ran: Ran, commit: Callable[[], None]) -> Ran:
    """``ran``, then, if no statement failed, ``commit`` (a COMMIT in the same trip): its
    error told as one more statement's, after every statement's rows."""
    if ran[2] is not None:
        return ran
    started = time.perf_counter()
    try:
        commit()
    except Exception as error:
        return ran[0], [*ran[1], time.perf_counter() - started], error
    return ran
