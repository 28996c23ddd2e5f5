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

from collections.abc import Mapping, Sequence
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


async def append(driver: Driver, events: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Chain ``events`` (each with ``FIELDS``) after the head, in one trip; the new head."""
    head: list[tuple[int, str]] = []

    def rows(found: list[list[Row]]) -> list[Row]:
        ((last_id, last_hash),) = found[0]
        last_id, last_hash = int(last_id), str(last_hash)
        made: list[Row] = []
        for event in events:
            fields = {**event, "id": last_id + 1, "prev_hash": last_hash}
            fields["hash"] = event_hash(fields)
            fields["occurred_at"] = driver.bound(EVENTS.c.occurred_at, event["occurred_at"])
            made.append(tuple(fields[name] for name in COLUMNS))
            last_id, last_hash = fields["id"], fields["hash"]
        head.append((last_id, last_hash))
        return made

    def moved(_found: list[list[Row]]) -> Row:
        return (*head[0], HEAD_ID)

    await driver.steps([(_HEAD, (HEAD_ID,), False), (_INSERT, rows, True), (_MOVE, moved, False)])
    return head[0]
