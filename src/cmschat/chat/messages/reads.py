"""Reading messages back: history pages, unread counts, and the replay of a room's
events for resuming WebSocket clients and for repairing gaps in live delivery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.chat import hot_reads, permissions
from cmschat.chat.caches import HotCaches
from cmschat.chat.messages import page_built, page_json, page_sqlite, rows
from cmschat.chat.models import EventType, Mention, Message, Room, RoomEvent, RoomMember
from cmschat.db.driver_sql import Driver, Row, Statement
from cmschat.errors import Invalid
from cmschat.events import Published

MAX_PAGE = 100


def _page(dialect: Dialect, *, newer: bool, cursor: bool) -> Select[Any]:
    """A history page's statement, built once: only its parameters change per request."""
    m = rows.MESSAGES.c
    # MariaDB would walk a big room's index from its newest message down to the cursor
    # ("ref" on room_id); the hint makes it seek straight to the cursor ("range").
    statement = (
        page_json.page_select(dialect)
        .with_hint(rows.MESSAGES, "FORCE INDEX (uq_messages_room_id_seq)", dialect_name="mysql")
        .where(m.room_id == bindparam("room_id"))
    )
    if newer:
        statement = statement.where(m.seq > bindparam("cursor")).order_by(m.seq.asc())
    else:
        if cursor:
            statement = statement.where(m.seq < bindparam("cursor"))
        statement = statement.order_by(m.seq.desc())
    statement = statement.limit(bindparam("limit"))
    if dialect.name == "sqlite" and not newer:
        return page_sqlite.older_page(statement)
    return statement


# Run with the driver (db.driver_sql): a page is the hottest read there is. One statement
# brings the messages with their authors: on SQLite whole, their mentions and files too
# (``page_sqlite``), taking the ready state first; on MariaDB their heads and stored tails,
# the rows without a tail read by id after it (``page_built``).
def _pages(*first: str) -> tuple[Statement, Statement, Statement]:
    """The pages after a cursor, before one, and the newest."""
    return (
        Statement(
            lambda d: _page(d, newer=True, cursor=True), (*first, "room_id", "cursor", "limit")
        ),
        Statement(
            lambda d: _page(d, newer=False, cursor=True), (*first, "room_id", "cursor", "limit")
        ),
        Statement(lambda d: _page(d, newer=False, cursor=False), (*first, "room_id", "limit")),
    )


_SQLITE_PAGES = _pages("ready")
_PAGES = _pages()


async def history_json(
    driver: Driver,
    *,
    user_id: int,
    room_id: int,
    before: int | None,
    after: int | None,
    limit: int,
    caches: HotCaches | None = None,
) -> bytes:
    """A page of messages, newest first, as ``MessagePage`` JSON; ``before``/``after`` are
    message seqs. ``caches``: the process's membership cache (``chat.caches``).

    Two statements at most, the membership (unless cached) and the page, each reading on
    its own: the page is one statement, so it is one snapshot on either backend.
    """
    _check_cursors(before, after)
    await permissions.check_member_row(driver, user_id=user_id, room_id=room_id, caches=caches)
    statement, parameters = page_read(
        driver, room_id=room_id, before=before, after=after, limit=limit
    )
    found = await driver.rows(statement, parameters)
    return await _page_of(driver, found, after=after, limit=limit)


async def history_json_of(
    driver: Driver,
    found: list[Row],
    *,
    user_id: int,
    room_id: int,
    before: int | None,
    after: int | None,
    limit: int,
    caches: HotCaches | None = None,
) -> bytes:
    """``history_json`` of the rows ``page_read`` read already, in the trip that read the
    caller's token (``api.deps.reading_signed_in``): they are written only once the
    cursors and the membership are checked, as ``history_json`` checks them."""
    _check_cursors(before, after)
    await permissions.check_member_row(driver, user_id=user_id, room_id=room_id, caches=caches)
    return await _page_of(driver, found, after=after, limit=limit)


def _check_cursors(before: int | None, after: int | None) -> None:
    if before is not None and after is not None:
        raise Invalid("give before or after, not both", field="after")


def page_read(
    driver: Driver, *, room_id: int, before: int | None, after: int | None, limit: int
) -> tuple[Statement, Row]:
    """The page's statement and parameters (one row more than ``limit``, to tell whether
    there is a next page); ``after`` wins over ``before``, which ``_check_cursors`` refuses
    together. The page's size is its last parameter (``without_rows`` sets it to 0)."""
    limit = _clamped(limit)
    first: tuple[Any, ...] = ()
    pages = _PAGES
    if driver.sqlite:
        first, pages = (page_built.ready_state(driver),), _SQLITE_PAGES
    after_, before_, newest = pages
    if after is not None:
        return after_, (*first, room_id, after, limit + 1)
    # SQLite reads an older page as one row that tells whether more follow (``_page``).
    size = limit if driver.sqlite else limit + 1
    if before is not None:
        return before_, (*first, room_id, before, size)
    return newest, (*first, room_id, size)


def without_rows(parameters: Row) -> Row:
    """``page_read``'s parameters for no rows at all (``LIMIT 0``): a page read in the
    token's trip for a token that will be refused reads nothing."""
    return (*parameters[:-1], 0)


def _clamped(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


async def _page_of(driver: Driver, found: list[Row], *, after: int | None, limit: int) -> bytes:
    sqlite = driver.sqlite
    if sqlite and after is None:
        return page_sqlite.older_page_bytes(found[0])
    limit = _clamped(limit)
    more = len(found) > limit
    found = found[:limit]
    next_cursor = page_json.cursor_of(found[-1], sqlite=sqlite) if more else None
    if not sqlite:
        found = await page_built.completed(driver, found, ready=page_built.ready_state(driver))
    if after is not None:
        found.reverse()
    return page_json.page_bytes(found, next_cursor, sqlite=sqlite)


async def unread_counts(
    session: AsyncSession, *, user: User, room_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """Per room: (unread messages by others, unread mentions of the user)."""
    if not room_ids:
        return {}
    unread = dict(
        (
            await session.execute(
                select(Message.room_id, func.count())
                .join(
                    RoomMember,
                    (RoomMember.room_id == Message.room_id) & (RoomMember.user_id == user.id),
                )
                .where(
                    Message.room_id.in_(room_ids),
                    Message.seq > RoomMember.last_read_seq,
                    Message.deleted_at.is_(None),
                    Message.author_id != user.id,
                )
                .group_by(Message.room_id)
            )
        ).all()
    )
    mentions = dict(
        (
            await session.execute(
                select(Mention.room_id, func.count())
                .join(
                    RoomMember,
                    (RoomMember.room_id == Mention.room_id) & (RoomMember.user_id == user.id),
                )
                .where(
                    Mention.user_id == user.id,
                    Mention.room_id.in_(room_ids),
                    Mention.seq > RoomMember.last_read_seq,
                )
                .group_by(Mention.room_id)
            )
        ).all()
    )
    return {
        room_id: (int(unread.get(room_id, 0)), int(mentions.get(room_id, 0)))
        for room_id in room_ids
    }


async def resync_point(session: AsyncSession, *, room_id: int, after: int) -> int | None:
    """None if the room's events after ``after`` are all still stored; else the seq to
    resync at (the room's newest), because retention purged some of them."""
    room = (
        await session.execute(
            select(Room.last_seq, Room.purged_through_seq).where(Room.id == room_id)
        )
    ).one_or_none()
    if room is None:
        return None
    first = await session.scalar(
        select(func.min(RoomEvent.seq)).where(RoomEvent.room_id == room_id, RoomEvent.seq > after)
    )
    purged_past_position = after < room.purged_through_seq
    if purged_past_position or (first is not None and first > after + 1):
        return int(room.last_seq)
    return None


async def load_events(
    session: AsyncSession,
    *,
    room_id: int,
    after: int,
    until: int | None = None,
    limit: int,
    caches: HotCaches | None = None,
) -> list[Published]:
    """Events of a room with ``after < seq <= until``, in order, at most ``limit``.

    Built from the current rows, through the same shapes as live events, so a client
    cannot tell a replayed event from a live one, except that a message deleted since
    shows as its tombstone.
    """
    e = RoomEvent.__table__.c
    statement = select(e.seq, e.type, e.message_id, e.user_id).where(
        e.room_id == room_id, e.seq > after
    )
    if until is not None:
        statement = statement.where(e.seq <= until)
    events = (await session.execute(statement.order_by(e.seq).limit(limit))).all()
    message_ids = [event.message_id for event in events if event.message_id is not None]
    views = {view["id"]: view for view in await rows.messages_by_id(session, message_ids)}
    user_ids = {event.user_id for event in events if event.user_id is not None}
    users = {
        user_id: {"id": user_id, "username": user.username, "display_name": user.display_name}
        for user_id, user in (await hot_reads.shown(session, caches, user_ids)).items()
    }
    updated = any(event.type is EventType.room_updated for event in events)
    room = await session.get(Room, room_id) if updated else None
    replayed = []
    for event in events:
        payload: dict[str, object]
        if event.message_id is not None:
            view = views.get(event.message_id)
            if view is None:  # purged by retention: the event has nothing left to show
                continue
            payload = {"message": view}
        elif event.type is EventType.room_updated and room is not None:
            payload = {
                "room": {
                    "id": room.id,
                    "name": room.name,
                    "topic": room.topic,
                    "archived": room.archived,
                }
            }
        else:
            user = users.get(event.user_id) if event.user_id is not None else None
            payload = {"user": user} if user else {}
        replayed.append(
            Published(
                room_id=room_id,
                seq=event.seq,
                type=EventType(event.type).value,
                payload=payload,
                user_id=event.user_id,
            )
        )
    return replayed
