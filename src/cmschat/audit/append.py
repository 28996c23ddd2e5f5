"""Appending events to the chain as driver calls (``db.driver_sql``): the head read, the
events' insert and the head's move in one trip to SQLite's driver thread.

An event's id and hash follow from the head read just before it, so the insert's rows are
a function of that read, built in the driver's thread (``Driver.steps``), as a send
batch's message rows are built from its sequence numbers. Run through the ORM session,
the three statements were most of an audited commit's fixed cost: three executions of
SQLAlchemy's statement machinery and, on SQLite, three trips. On MariaDB the head is still
read ``FOR UPDATE``, so concurrent appends still take turns on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from cmschat.audit.chain import event_hash
from cmschat.audit.models import AuditEvent, AuditHead
from cmschat.db.driver_sql import Driver, Row, Statement

HEAD = cast(Table, AuditHead.__table__)
EVENTS = cast(Table, AuditEvent.__table__)
HEAD_ID = 1
"""The head's one row."""

COLUMNS = tuple(column.name for column in EVENTS.columns)
"""Every column of an event, in the table's order (the insert's parameter order)."""
FIELDS = tuple(name for name in COLUMNS if name not in ("id", "prev_hash", "hash"))
"""What the caller gives of each event: the chain fills in its id, ``prev_hash`` and hash."""

_HEAD = Statement(
    lambda _dialect: (
        select(HEAD.c.last_id, HEAD.c.last_hash)
        .where(HEAD.c.id == bindparam("head_id"))
        .with_for_update()
    ),
    ("head_id",),
)
_INSERT = Statement(
    lambda _dialect: insert(EVENTS).values({name: bindparam(name) for name in COLUMNS}),
    COLUMNS,
)
_MOVE = Statement(
    lambda _dialect: (
        update(HEAD)
        .where(HEAD.c.id == bindparam("head_id"))
        .values(last_id=bindparam("new_id"), last_hash=bindparam("new_hash"))
    ),
    ("new_id", "new_hash", "head_id"),
)


def driver_of(connection: Connection) -> Driver:
    """The driver of a synchronous connection's transaction (inside the async bridge)."""
    return Driver(connection.connection.dbapi_connection, connection.dialect, connection)


class Chained:
    """The steps that chain events after the head, to run in a trip with others
    (``Driver.steps``), and the new head once they ran. ``events`` is called in the driver's
    thread, once the statements before these steps ran (the ids of the rows they inserted
    may be in the events)."""

    def __init__(self, driver: Driver, events: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
        self._driver = driver
        self._events = events
        self.head: tuple[int, str] | None = None
        """The chain's new head (id, hash), once the steps ran."""

    def steps(self) -> list[tuple[Statement, Any, bool]]:
        """Head read (``FOR UPDATE`` on MariaDB), events' insert, head move."""
        return [
            (_HEAD, (HEAD_ID,), False),
            (_INSERT, self._rows, True),
            (_MOVE, self._moved, False),
        ]

    def _rows(self, found: list[list[Row]]) -> list[Row]:
        ((last_id, last_hash),) = found[-1]  # the head, read just before
        last_id, last_hash = int(last_id), str(last_hash)
        made: list[Row] = []
        # The events of a commit share their time: bound once, not once per event.
        at: Any = None
        bound: Any = None
        for event in self._events():
            fields = {**event, "id": last_id + 1, "prev_hash": last_hash}
            fields["hash"] = event_hash(fields)
            if event["occurred_at"] is not at:
                at = event["occurred_at"]
                bound = self._driver.bound(EVENTS.c.occurred_at, at)
            fields["occurred_at"] = bound
            made.append(tuple([fields[name] for name in COLUMNS]))
            last_id, last_hash = fields["id"], fields["hash"]
        self.head = (last_id, last_hash)
        return made

    def _moved(self, _found: list[list[Row]]) -> Row:
        if self.head is None:  # pragma: no cover - the insert's step sets it
            raise RuntimeError("the head moved before the events were chained")
        return (*self.head, HEAD_ID)


async def append(driver: Driver, events: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Chain ``events`` (each with ``FIELDS``) after the head, in one trip; the new head."""
    chained = Chained(driver, lambda: events)
    await driver.steps(chained.steps())
    if chained.head is None:  # pragma: no cover - steps ran, or raised
        raise RuntimeError("the audit events were not chained")
    return chained.head
