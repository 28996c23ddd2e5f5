"""A batch's multi-row message ``INSERT … RETURNING`` (``batch_sql.store``), in two forms.

``given(size)``: every seq a bound value, worked out from the rooms' ``last_seq`` read
just before (SQLite, where the read and the insert share a trip to the driver's thread
anyway). ``numbered(size)``: each seq numbered by the insert itself, from the room's
``last_seq`` the batch's ``UPDATE`` just raised (``(SELECT last_seq …) - k``, ``k`` the
sends after it in its room), so on MariaDB the update and the insert go in one round trip
with no read between them (``db/mariadb_trips.py``); the seqs come back with the ids, and
the stored history tail is bound in hex there (MariaDB's form).
Either is compiled once per size and kept: a process meets at most ``MAX_BATCH`` of each.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select

from cmschat.chat.models import Message, Room
from cmschat.db.driver_sql import BySize, Statement

ROOMS = cast(Table, Room.__table__)
MESSAGES = cast(Table, Message.__table__)
STAMPS = ("created_at", "created_by", "updated_at", "updated_by")
"""The audit columns, in the tables' order (the compiled statements' parameter order)."""
COLUMNS = (
    "room_id",
    "seq",
    "author_id",
    "client_id",
    "reply_to_id",
    "content",
    "content_html",
    "page_tail",
    *STAMPS,
)
"""A message's columns, in the table's order; a row's values are given in this order."""
TAIL = COLUMNS.index("page_tail")


def _given_of(size: int) -> Statement:
    names = [f"{column}_{n}" for n in range(size) for column in COLUMNS]
    return Statement(
        lambda _dialect: (
            insert(MESSAGES)
            .values(
                [{column: bindparam(f"{column}_{n}") for column in COLUMNS} for n in range(size)]
            )
            .returning(MESSAGES.c.id, MESSAGES.c.room_id, MESSAGES.c.seq)
        ),
        names,
    )


def _value(column: str, n: int) -> Any:
    if column == "page_tail":
        # Bound in hex (``page_tail.bound``): asyncmy escapes a text holding a quote
        # character by character, a hex string takes its fast path.
        return func.unhex(bindparam(f"{column}_{n}"))
    if column != "seq":
        return bindparam(f"{column}_{n}")
    last = select(ROOMS.c.last_seq).where(ROOMS.c.id == bindparam(f"q_{n}")).scalar_subquery()
    return last - bindparam(f"k_{n}")


def _numbered_of(size: int) -> Statement:
    # The seq's value is two parameters (the room again, and k), in the column's place.
    names = [
        name
        for n in range(size)
        for column in COLUMNS
        for name in ((f"q_{n}", f"k_{n}") if column == "seq" else (f"{column}_{n}",))
    ]
    return Statement(
        lambda _dialect: (
            insert(MESSAGES)
            .values([{column: _value(column, n) for column in COLUMNS} for n in range(size)])
            .returning(MESSAGES.c.id, MESSAGES.c.room_id, MESSAGES.c.seq)
        ),
        names,
    )


given = BySize(_given_of)
numbered = BySize(_numbered_of)
