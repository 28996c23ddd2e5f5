"""The writes of a group commit as driver calls (``db.driver_sql``): fixed SQL, bound
values, rows as tuples.

A batch numbers its sends (one UPDATE per room), inserts its messages in one multi-row
``INSERT … RETURNING`` (SQLite ≥ 3.35, MariaDB ≥ 10.5: no second statement to read the ids
back), then their events, mentions and search index rows with ``executemany``, in one
``Driver.steps`` (``store``), each statement's parameters built from the rows of those
before it. On SQLite, in one trip to the driver's thread, the rooms' new ``last_seq`` is
read between the update and the insert, and the seqs given to it; on MariaDB the insert
numbers the seqs itself from the updated rooms (``message_insert.numbered``), so the
update and the insert share a round trip, then the rows made from their ids share the next
(``db/mariadb_trips.py``). Statements whose shape depends on the batch (how many rooms, how
many messages) are compiled once per size and kept: a process meets at most ``MAX_BATCH``
of each."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from itertools import chain
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement

from cmschat.accounts.models import User
from cmschat.attachments.models import Attachment
from cmschat.audit.append import Chained
from cmschat.chat import search_index
from cmschat.chat.messages import message_insert
from cmschat.chat.messages.message_insert import MESSAGES as MESSAGES
from cmschat.chat.messages.message_insert import ROOMS, STAMPS
from cmschat.chat.models import EventType, Mention, RoomEvent, RoomMember
from cmschat.db.driver_sql import BySize, Driver, Row, Statement

EVENTS = cast(Table, RoomEvent.__table__)
MENTIONS = cast(Table, Mention.__table__)
MEMBERS = cast(Table, RoomMember.__table__)
USERS = cast(Table, User.__table__)
ATTACHMENTS = cast(Table, Attachment.__table__)

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
_LINK = Statement(
    lambda _dialect: (
        update(ATTACHMENTS)
        .where(ATTACHMENTS.c.id == bindparam("b_id"))
        .values(
            message_id=bindparam("b_message"),
            updated_at=bindparam("b_at"),
            updated_by=bindparam("b_by"),
        )
    ),
    ("b_message", "b_at", "b_by", "b_id"),
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


def _named_of(rooms: int, names: int) -> Statement:
    room_names = [f"r{n}" for n in range(rooms)]
    user_names = [f"n{n}" for n in range(names)]
    return Statement(
        lambda _dialect: (
            select(MEMBERS.c.room_id, USERS.c.username, USERS.c.id)
            .join_from(USERS, MEMBERS, MEMBERS.c.user_id == USERS.c.id)
            .where(
                MEMBERS.c.room_id.in_([bindparam(name) for name in room_names]),
                USERS.c.username.in_([bindparam(name) for name in user_names]),
            )
        ),
        [*room_names, *user_names],
    )


_NAMED: dict[tuple[int, int], Statement] = {}
"""``_named_of`` per (rooms, names) sizes, each a power of two: the names of a batch have
no bound but the messages' length, and a statement kept per exact count would let one
member grow every worker's memory (1, 2, 3 … thousands of distinct ``@names``)."""


def _padded(values: Collection[Any]) -> list[Any]:
    """``values`` (not empty) with its last repeated up to the next power of two: the
    same rows in an ``IN`` list, from one of few statements."""
    padded = list(values)
    padded.extend(padded[-1:] * ((1 << (len(padded) - 1).bit_length()) - len(padded)))
    return padded


async def checked(
    driver: Driver,
    keys: Collection[tuple[int, int, str]],
    rooms: Collection[int],
    names: Collection[str],
) -> tuple[list[int], list[tuple[int, str, int]]]:
    """What a batch's checks read, in one trip: the ids of the stored messages with these
    (room, author, client id) keys (repeats), and (room id, username, user id) of the members
    of ``rooms`` named in ``names`` (mentions). Either is left out when not asked."""
    steps: list[tuple[Statement, Any, bool]] = []
    if keys:
        steps.append((_REPEATS(len(keys)), tuple(chain.from_iterable(keys)), False))
    if rooms and names:
        room_ids, usernames = _padded(rooms), _padded(names)
        size = (len(room_ids), len(usernames))
        named = _NAMED.get(size)
        if named is None:
            named = _NAMED[size] = _named_of(*size)
        steps.append((named, (*room_ids, *usernames), False))
    if not steps:
        return [], []
    found = await driver.steps(steps)
    repeats = [message_id for (message_id,) in found[0]] if keys else []
    members = [(room, name, user) for room, name, user in found[-1]] if rooms and names else []
    return repeats, members


def stamps(driver: Driver, now: datetime, actor: str) -> tuple[Any, str, Any, str]:
    """The audit columns' values (``STAMPS``) as the driver takes them."""
    at = driver.bound(MESSAGES.c.created_at, now)
    return (at, actor, at, actor)


Draft = tuple[
    int,
    int,
    str | None,
    int | None,
    str,
    str,
    tuple[Any, ...],
    Sequence[int],
    Sequence[int],
    str,
    str | None,
]
"""A message to store: room, author, client id, reply-to, content, its HTML, its ``STAMPS``
values (``stamps``), the ids of the members it mentions and of the uploads it carries, its
search row's text (``search_index.gram_text``; "": none) and its history tail as the
insert binds it (``page_tail.bound``; None: none)."""


async def store(
    driver: Driver,
    drafts: Sequence[Draft],
    *,
    audit: Callable[[Sequence[int]], Chained] | None = None,
    run: Callable[[list[tuple[Statement, Any, bool]]], Awaitable[list[list[Row]]]] | None = None,
) -> list[tuple[int, int]]:
    """Number and insert messages, with their events, mentions, search rows and uploads'
    links, in one trip to SQLite's driver thread or few MariaDB round trips
    (``Driver.steps``); each one's (seq, message id). ``audit``: given the list the message
    ids will be in (filled as the steps run), the steps that chain the batch's audit
    events, run last (the audit head is the last row a batch locks, as at any other
    commit). ``run``: what runs the steps (``Driver.steps``; the writer's
    ``steps_then_commit``, which commits in the same trip)."""
    counts = Counter(draft[0] for draft in drafts)
    # Rooms in id order: two processes' batches lock the rows they share in the same order.
    rooms = sorted(counts)
    # Filled in the driver's thread, each step's rows from those of the steps before it.
    seqs: list[int] = []
    ids: list[int] = []

    # Per send, how many sends of its room come after it in the batch: its seq is the
    # room's raised ``last_seq`` less that.
    behind: list[int] = []
    for room_id in (draft[0] for draft in drafts):
        counts[room_id] -= 1
        behind.append(counts[room_id])
    counts.update(draft[0] for draft in drafts)

    def messages(found: list[list[Row]]) -> Row:
        last: dict[int, int] = dict(found[1])
        seqs.extend(last[draft[0]] - k for draft, k in zip(drafts, behind, strict=True))
        return tuple(
            chain.from_iterable(
                (draft[0], seq, *draft[1:6], draft[10], *draft[6])
                for draft, seq in zip(drafts, seqs, strict=True)
            )
        )

    def events(found: list[list[Row]]) -> list[Row]:
        if not seqs:  # numbered by the insert (MariaDB): the room's highest is its last_seq
            last = {room_id: seq for _id, room_id, seq in sorted(found[-1], key=lambda r: r[2])}
            seqs.extend(last[draft[0]] - k for draft, k in zip(drafts, behind, strict=True))
        by_key = {(room_id, seq): message_id for message_id, room_id, seq in found[-1]}
        ids.extend(by_key[(draft[0], seq)] for draft, seq in zip(drafts, seqs, strict=True))
        return [
            (draft[0], seq, CREATED, message_id, None, *draft[6])
            for draft, seq, message_id in zip(drafts, seqs, ids, strict=True)
        ]

    def mentions(_found: list[list[Row]]) -> list[Row]:
        return [
            (message_id, user_id, draft[0], seq, *draft[6])
            for draft, seq, message_id in zip(drafts, seqs, ids, strict=True)
            for user_id in draft[7]
        ]

    grams = [draft[9] for draft in drafts]

    def index(_found: list[list[Row]]) -> list[Row]:
        return [(message_id, text) for text, message_id in zip(grams, ids, strict=True) if text]

    def links(_found: list[list[Row]]) -> list[Row]:
        return [
            (message_id, draft[6][2], draft[6][3], file_id)
            for draft, message_id in zip(drafts, ids, strict=True)
            for file_id in draft[8]
        ]

    steps: list[tuple[Statement, Any, bool]] = [
        (_BUMP, [(counts[room_id], room_id) for room_id in rooms], True)
    ]
    if driver.sqlite:
        steps.append((_SEQS(len(rooms)), tuple(rooms), False))
        steps.append((message_insert.given(len(drafts)), messages, False))
    else:  # no read between the update and the insert: one round trip (mariadb_trips)
        numbered = chain.from_iterable(
            (draft[0], draft[0], k, *draft[1:6], draft[10], *draft[6])
            for draft, k in zip(drafts, behind, strict=True)
        )
        steps.append((message_insert.numbered(len(drafts)), tuple(numbered), False))
    steps.append((_EVENTS, events, True))
    # Statements with no rows to write are left out here, where that is known, so that
    # none is announced to the cursor events (or counted) without running.
    if any(draft[7] for draft in drafts):
        steps.append((_MENTIONS, mentions, True))
    if any(grams):
        steps.append((_INDEX, index, True))
    if any(draft[8] for draft in drafts):
        steps.append((_LINK, links, True))
    if audit is not None:
        steps.extend(audit(ids).steps())
    await (driver.steps if run is None else run)(steps)
    return list(zip(seqs, ids, strict=True))
