"""Changes to stored messages: edit, delete to a tombstone, move the read marker."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.attachments import erasure
from cmschat.audit import service as audit
from cmschat.chat import permissions, search_index
from cmschat.chat.events import append_event
from cmschat.chat.messages.sending import check_content, render_content
from cmschat.chat.messages.views import message_event, message_view
from cmschat.chat.models import EventType, Mention, Message, Room, RoomMember
from cmschat.chat.schemas import MessageRead
from cmschat.clock import Clock
from cmschat.errors import Conflict, Invalid
from cmschat.events import Published, queue_events


async def _message_for(
    session: AsyncSession, user: User, message_id: int
) -> tuple[Message, Room, RoomMember | None]:
    # The message's row locked first: a purge deleting it meanwhile is then either waited
    # for (and the message is gone: 404) or deadlocks with this change (503, a conflict).
    # Unlocked, the change read the row, waited for the purge's locks, and then wrote
    # beside a message that no longer existed (a foreign-key error: a 500).
    message, member = await permissions.require_readable_message(
        session, user=user, message_id=message_id, for_update=True
    )
    room = await session.get(Room, message.room_id)
    assert room is not None  # noqa: S101 - foreign key
    return message, room, member


async def edit_message(
    session: AsyncSession,
    *,
    user: User,
    message_id: int,
    content: str,
    max_length: int,
    clock: Clock,
) -> MessageRead:
    """Change one's own message's text."""
    message, room, _member = await _message_for(session, user, message_id)
    permissions.require_author(user, message)
    if message.deleted_at is not None:
        raise Conflict("the message was deleted", code="message_deleted")
    if room.archived:
        raise Conflict("the room is archived", code="room_archived")
    check_content(content, limit=max_length)
    html, mentioned = await render_content(session, room.id, content)
    audit.record(
        session,
        action="message.edited",
        target_type="message",
        target_id=message.id,
        changes={
            "room_id": room.id,
            "content": [audit.text_digest(message.content), audit.text_digest(content)],
        },
    )
    message.content, message.content_html, message.edited_at = content, html, clock.now()
    known = set(
        (
            await session.scalars(select(Mention.user_id).where(Mention.message_id == message.id))
        ).all()
    )
    for user_id in set(mentioned) - known:
        session.add(
            Mention(message_id=message.id, user_id=user_id, room_id=room.id, seq=message.seq)
        )
    if known - set(mentioned):
        # Mentions edited out no longer flag their users (nor show in ``mentions``).
        await session.execute(
            delete(Mention).where(
                Mention.message_id == message.id, Mention.user_id.in_(known - set(mentioned))
            )
        )
    await search_index.index_message(session, message=message)
    return await _announce_change(session, message, EventType.message_updated)


async def delete_message(
    session: AsyncSession,
    *,
    user: User,
    message_id: int,
    clock: Clock,
    eraser: erasure.Eraser,
    reason: str | None = None,
) -> MessageRead:
    """Delete to a tombstone: the row stays for order and replies, the content goes.

    ``reason``: a moderator's, kept in the audit trail.
    """
    message, _room, member = await _message_for(session, user, message_id)
    permissions.require_can_delete_message(user, member, message)
    if message.deleted_at is not None:
        return await message_view(session, message)  # already a tombstone: no new event
    audit.record(
        session,
        action="message.deleted",
        target_type="message",
        target_id=message.id,
        changes={
            "room_id": message.room_id,
            "author_id": message.author_id,
            "content": audit.text_digest(message.content),
            **({"reason": reason} if reason else {}),
        },
    )
    message.content, message.content_html, message.deleted_at = "", "", clock.now()
    await session.execute(delete(Mention).where(Mention.message_id == message.id))
    await search_index.unindex_message(session, message_id=message.id)
    await erasure.remove_for_messages(session, eraser=eraser, message_ids=[message.id])
    return await _announce_change(session, message, EventType.message_deleted)


async def _announce_change(
    session: AsyncSession, message: Message, event_type: EventType
) -> MessageRead:
    """Record the room event of a change to a message and queue it; the message's view."""
    event = await append_event(
        session, room_id=message.room_id, type=event_type, message_id=message.id
    )
    await session.flush()
    view = await message_view(session, message)
    queue_events(session, [message_event(event_type, event.seq, view)])
    return view


async def mark_read(session: AsyncSession, *, user: User, room_id: int, message_id: int) -> int:
    """Move the read marker forward to a message (never backward); tell the reader's
    other connections."""
    _room, member = await permissions.require_member(session, user=user, room_id=room_id)
    message = await session.get(Message, message_id)
    if message is None or message.room_id != room_id:
        raise Invalid("message_id must be a message of this room", field="message_id")
    if message.seq > member.last_read_seq:
        # Not audited: every open room moves it on every message, so it would drown the
        # trail's real changes, and it is the reader's own bookmark, changing nobody's data.
        member.last_read_seq = message.seq
        await session.flush()
    event = Published(
        room_id=room_id,
        seq=None,
        type="read",
        only_user_ids=(user.id,),
        payload={"user_id": user.id, "last_read_seq": member.last_read_seq},
    )
    queue_events(session, [event])
    return member.last_read_seq
