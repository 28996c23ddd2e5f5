"""The writes of a group commit as driver calls (``db.driver_sql``): fixed SQL, bound
values, one call to the driver per statement, rows as tuples.

A batch numbers its sends (one UPDATE per room, then the rooms' new ``last_seq``), inserts
its messages in one multi-row ``INSERT … RETURNING`` (SQLite ≥ 3.35, MariaDB ≥ 10.5: no
second statement to read the ids back), then their events, mentions and search index rows
with ``executemany``. Statements whose shape depends on the batch (how many rooms, how many
messages) are compiled once per size and kept: a process meets at most ``MAX_BATCH`` of each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from itertools import chain
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement

from cmschat.chat import search_index
from cmschat.chat.models import EventType, Mention, Message, Room, RoomEvent
from cmschat.db.driver_sql import BySize, Driver, Statement

ROOMS = cast(Table, Room.__table__)
MESSAGES = cast(Table, Message.__table__)
EVENTS = cast(Table, RoomEvent.__table__)
MENTIONS = cast(Table, Mention.__table__)

STAMPS = ("created_at", "created_by", "updated_at", "updated_by")
"""The audit columns, in the tables' order (the compiled statements' parameter order)."""
MESSAGE_COLUMNS = (
    "room_id",
    "seq",
    "author_id",
    "client_id",
    "reply_to_id",
    "content",
    "content_html",
    *STAMPS,
)
EVENT_COLUMNS = ("room_id", "seq", "type", "message_id", "user_id", *STAMPS)
MENTION_COLUMNS = ("message_id", "user_id", "room_id", "seq", *STAMPS)
CREATED = EventType.message_created.value


def _insert(table: Table, columns: Sequence[str]) -> Statement:
    return Statement(
        lambda _dialect: insert(table).values({name: bindparam(name) for name in columns}),
        columns,
    )


_BUMP = Statement(
    lambda _dialect: (
        update(ROOMS)
        .where(ROOMS.c.id == bindparam("b_room"))
        .values(last_seq=ROOMS.c.last_seq + bindparam("b_count"))
    ),
    ("b_count", "b_room"),
)
_EVENTS = _insert(EVENTS, EVENT_COLUMNS)
_MENTIONS = _insert(MENTIONS, MENTION_COLUMNS)


def _index(dialect: Dialect) -> ClauseElement:
    table = search_index.SQLITE_INDEX if dialect.name == "sqlite" else search_index.MARIADB_INDEX
    return insert(table).values(message_id=bindparam("message_id"), grams=bindparam("grams"))


_INDEX = Statement(_index, ("message_id", "grams"))


def _seqs_of(size: int) -> Statement:
    names = [f"r{n}" for n in range(size)]
    return Statement(
        lambda _dialect: select(ROOMS.c.id, ROOMS.c.last_seq).where(
            ROOMS.c.id.in_([bindparam(name) for name in names])
        ),
        names,
    )


def _messages_of(size: int) -> Statement:
    names = [f"{column}_{n}" for n in range(size) for column in MESSAGE_COLUMNS]
    return Statement(
        lambda _dialect: (
            insert(MESSAGES)
            .values(
                [
                    {column: bindparam(f"{column}_{n}") for column in MESSAGE_COLUMNS}
                    for n in range(size)
                ]
            )
            .returning(MESSAGES.c.id, MESSAGES.c.room_id, MESSAGES.c.seq)
        ),
        names,
    )


def _repeats_of(size: int) -> Statement:
    keys = [(f"r{n}", f"a{n}", f"c{n}") for n in range(size)]
    m = MESSAGES.c
    # ORs of the unique key's equalities: each backend seeks the key once per send (a
    # tuple IN of bound parameters would be an expanding list SQLAlchemy renders per run).
    return Statement(
        lambda _dialect: select(m.id).where(
            or_(
                *(
                    and_(
                        m.room_id == bindparam(room),
                        m.author_id == bindparam(author),
                        m.client_id == bindparam(client),
                    )
                    for room, author, client in keys
                )
            )
        ),
        [name for key in keys for name in key],
    )


_SEQS = BySize(_seqs_of)
_REPEATS = BySize(_repeats_of)


async def repeated(driver: Driver, keys: Collection[tuple[int, int, str]]) -> list[int]:
    """The ids of the stored messages with these (room, author, client id) keys."""
    found = await driver.rows(_REPEATS(len(keys)), tuple(chain.from_iterable(keys)))
    return [message_id for (message_id,) in found]


_MESSAGES = BySize(_messages_of)


async def number(driver: Driver, counts: dict[int, int]) -> dict[int, int]:
    """Take ``counts[room]`` seqs in each room; per room, the first one taken."""
    # Rooms in id order: two processes' batches lock the rows they share in the same order.
    rooms = sorted(counts)
    _bumped, found = await driver.steps(
        [
            (_BUMP, [(counts[room_id], room_id) for room_id in rooms], True),
            (_SEQS(len(rooms)), tuple(rooms), False),
        ]
    )
    return {room_id: last_seq - counts[room_id] + 1 for room_id, last_seq in found}


async def insert_messages(driver: Driver, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Insert messages (``MESSAGE_COLUMNS`` tuples); their ids, in the rows' order."""
    flat = tuple(chain.from_iterable(rows))
    ids = {
        (room_id, seq): message_id
        for message_id, room_id, seq in await driver.rows(_MESSAGES(len(rows)), flat)
    }
    return [ids[(row[0], row[1])] for row in rows]


def stamps(driver: Driver, now: datetime, actor: str) -> tuple[Any, str, Any, str]:
    """The audit columns' values (``STAMPS``) as the driver takes them."""
    at = driver.bound(MESSAGES.c.created_at, now)
    return (at, actor, at, actor)


async def insert_rows(
    driver: Driver,
    *,
    events: Sequence[tuple[Any, ...]],
    mentions: Sequence[tuple[Any, ...]],
    indexed: Sequence[tuple[int, str]],
) -> None:
    """Insert the rows that follow the messages, in one trip: room events
    (``EVENT_COLUMNS`` tuples), mentions (``MENTION_COLUMNS``) and the search index of
    ``(id, content)`` each (``search_index.grams``)."""
    index = [
        (message_id, " ".join(dict.fromkeys(tokens)))
        for message_id, content in indexed
        if (tokens := search_index.grams(content))
    ]
    await driver.steps(
        [(_EVENTS, events, True), (_MENTIONS, mentions, True), (_INDEX, index, True)]
    )
