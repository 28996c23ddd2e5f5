"""What the checks of a send batch read: memberships come from the caches (``hot_reads``);
the repeats of stored client ids and the members the sends mention in one trip
(``batch_sql.checked``); the rooms of the messages replied to.

A send is rendered in its sender's task (``prepared``); the names of those that would pass
the checks up to their content are looked up in the repeats' trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

from sqlalchemy import select

from cmschat.chat.caches import Membership
from cmschat.chat.messages import batch_sql
from cmschat.chat.messages.batch_sql import MESSAGES
from cmschat.chat.messages.views import Sent, message_views
from cmschat.chat.models import Message
from cmschat.db.writer import WriterTransaction

if TYPE_CHECKING:
    from cmschat.chat.messages.group_commit import Pending

ClientKey = tuple[int, int, str]
"""A send's idempotency key: room, author, client id."""


def key_of(pending: Pending) -> ClientKey | None:
    """A send's idempotency key (None: it has no client id)."""
    client_id = pending.draft.client_id
    return None if client_id is None else (pending.room_id, pending.user_id, client_id)


def _may_pass(pending: Pending, member: Membership | None) -> bool:
    """Whether a send passes the checks up to its content (so its mentions are looked up)."""
    return member is not None and not member.archived and pending.prepared.refused is None


async def reads(
    transaction: WriterTransaction,
    batch: Sequence[Pending],
    memberships: Mapping[tuple[int, int], Membership],
) -> tuple[dict[ClientKey, Sent], dict[tuple[int, str], int]]:
    """In one trip: the stored messages whose client id a send repeats (as their views),
    and the members mentioned by the sends that pass the checks up to their content
    ((room id, username) to user id)."""
    keys = {key for pending in batch if (key := key_of(pending)) is not None}
    wanted = {
        (pending.room_id, name)
        for pending in batch
        if _may_pass(pending, memberships.get((pending.room_id, pending.user_id)))
        for name in pending.prepared.mentioned
    }
    if not keys and not wanted:
        return {}, {}
    ids, members = await batch_sql.checked(
        await transaction.driver(), keys, {room for room, _ in wanted}, {name for _, name in wanted}
    )
    known = {(room_id, username): user_id for room_id, username, user_id in members}
    if not ids:  # almost always: loaded as objects (an ORM session) only when found
        return {}, known
    session = await transaction.orm()
    found = (await session.scalars(select(Message).where(Message.id.in_(ids)))).all()
    views = await message_views(session, found)
    repeats = {
        (message.room_id, cast(int, message.author_id), cast(str, message.client_id)): (
            Sent.of_model(view)
        )
        for message, view in zip(found, views, strict=True)
    }
    return repeats, known


async def parents(transaction: WriterTransaction, batch: Sequence[Pending]) -> dict[int, int]:
    """The room of each message a send replies to."""
    ids = {pending.draft.reply_to for pending in batch if pending.draft.reply_to is not None}
    if not ids:
        return {}
    rows = await transaction.execute(
        select(MESSAGES.c.id, MESSAGES.c.room_id).where(MESSAGES.c.id.in_(ids))
    )
    return {message_id: room_id for message_id, room_id in rows}
