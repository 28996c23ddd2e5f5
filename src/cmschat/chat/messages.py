"""Messages: send (idempotent), edit, delete to a tombstone, history, read markers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.attachments import service as attachments
from cmschat.attachments.models import Attachment
from cmschat.attachments.schemas import AttachmentRead
from cmschat.audit import service as audit
from cmschat.chat import permissions, rendering, search_index
from cmschat.chat.events import Published, append_event, next_seq
from cmschat.chat.models import EventType, Mention, Message, Room, RoomMember
from cmschat.chat.ratelimit import SendLimiter, check_send_rate
from cmschat.chat.schemas import MessageRead, UserBrief
from cmschat.clock import Clock
from cmschat.errors import Conflict, Invalid

MAX_PAGE = 100


def _check_content(content: str, *, limit: int, has_files: bool = False) -> None:
    if not content.strip() and not has_files:
        raise Invalid("a message needs some text (or a file)", field="content")
    if len(content) > limit:
        raise Invalid(f"a message is at most {limit} characters", field="content", code="too_long")


async def _room_members_by_name(
    session: AsyncSession, room_id: int, names: Sequence[str]
) -> dict[str, int]:
    if not names:
        return {}
    rows = (
        await session.execute(
            select(User.username, User.id)
            .join(RoomMember, RoomMember.user_id == User.id)
            .where(RoomMember.room_id == room_id, User.username.in_(names))
        )
    ).all()
    return {username: user_id for username, user_id in rows}


async def _render(session: AsyncSession, room_id: int, content: str) -> tuple[str, list[int]]:
    """Safe HTML, and the ids of room members it mentions (others could not read it)."""
    known = await _room_members_by_name(session, room_id, rendering.find_mentions(content))
    return rendering.render(content, known_users=known), sorted(set(known.values()))


async def message_view(session: AsyncSession, message: Message) -> MessageRead:
    """The API shape of one message."""
    return (await message_views(session, [message]))[0]


async def message_views(session: AsyncSession, messages: Sequence[Message]) -> list[MessageRead]:
    """The API shape of messages: authors, mentions and files loaded in three queries."""
    author_ids = {m.author_id for m in messages if m.author_id is not None}
    authors = (
        {
            u.id: u
            for u in (await session.scalars(select(User).where(User.id.in_(author_ids)))).all()
        }
        if author_ids
        else {}
    )
    mentions: dict[int, list[int]] = {}
    if messages:
        rows = (
            await session.execute(
                select(Mention.message_id, Mention.user_id).where(
                    Mention.message_id.in_([m.id for m in messages])
                )
            )
        ).all()
        for message_id, user_id in rows:
            mentions.setdefault(message_id, []).append(user_id)
    files = await attachments.attachments_of(session, [m.id for m in messages])
    views = []
    for m in messages:
        author = authors.get(m.author_id) if m.author_id is not None else None
        views.append(_view(m, author, mentions.get(m.id, []), files.get(m.id, [])))
    return views


def _view(
    m: Message, author: User | None, mentions: Sequence[int], files: Sequence[Attachment]
) -> MessageRead:
    return MessageRead(
        id=m.id,
        room_id=m.room_id,
        seq=m.seq,
        author=UserBrief.model_validate(author) if author else None,
        content=m.content,
        content_html=m.content_html,
        reply_to=m.reply_to_id,
        mentions=sorted(mentions),
        created_at=m.created_at,
        updated_at=m.updated_at,
        edited=m.edited_at is not None,
        deleted=m.deleted_at is not None,
        attachments=[AttachmentRead.model_validate(a) for a in files],
    )


def _message_event(event_type: EventType, seq: int, view: MessageRead) -> Published:
    return Published(
        room_id=view.room_id,
        seq=seq,
        type=event_type.value,
        payload={"message": view.model_dump(mode="json")},
    )


async def send_message(
    session: AsyncSession,
    *,
    user: User,
    room_id: int,
    content: str,
    client_id: str | None,
    reply_to: int | None,
    max_length: int,
    attachment_ids: Sequence[int] = (),
    limiter: SendLimiter | None = None,
) -> tuple[MessageRead, bool, list[Published]]:
    """Store a message and its event; a repeated ``client_id`` returns the first message.

    The send rate is checked after the repeat lookup (a retry of a stored message costs
    nothing) and the checks of the input (a refused message costs nothing either).
    """
    room, _member = await permissions.require_member(session, user=user, room_id=room_id)
    if client_id is not None:
        first = await _by_client_id(session, room_id, user.id, client_id)
        if first is not None:
            return await message_view(session, first), False, []
    if room.archived:
        raise Conflict("the room is archived", code="room_archived")
    _check_content(content, limit=max_length, has_files=bool(attachment_ids))
    if reply_to is not None:
        parent = await session.get(Message, reply_to)
        if parent is None or parent.room_id != room_id:
            raise Invalid("reply_to must be a message of this room", field="reply_to")
    await check_send_rate(limiter, user_id=user.id)
    html, mentioned = await _render(session, room_id, content)
    store = _Store(
        user=user,
        room_id=room_id,
        client_id=client_id,
        reply_to=reply_to,
        content=content,
        html=html,
        mentioned=mentioned,
        attachment_ids=list(dict.fromkeys(attachment_ids)),
    )
    if client_id is None:
        message, files = await store.run(session)
    else:
        try:
            # A savepoint: if a concurrent retry with the same client_id won, the reserved
            # seq is given back with it, so the room's numbering stays gap-free.
            async with session.begin_nested():
                message, files = await store.run(session)
        except IntegrityError:
            first = await _by_client_id(session, room_id, user.id, client_id)
            if first is None:
                raise
            return await message_view(session, first), False, []
    audit.record(
        session,
        action="message.created",
        target_type="message",
        target_id=message.id,
        changes={
            "room_id": room_id,
            "content": audit.text_digest(content),
            "attachment_ids": [file.id for file in files],
        },
    )
    # Everything the view needs is at hand: no queries to read back what was just written.
    view = _view(message, user, mentioned, files)
    return view, True, [_message_event(EventType.message_created, message.seq, view)]


@dataclass(frozen=True)
class _Store:
    """The writes of one new message, with or without a savepoint around them."""

    user: User
    room_id: int
    client_id: str | None
    reply_to: int | None
    content: str
    html: str
    mentioned: list[int]
    attachment_ids: list[int]

    async def run(self, session: AsyncSession) -> tuple[Message, list[Attachment]]:
        seq = await next_seq(session, room_id=self.room_id)
        message = Message(
            room_id=self.room_id,
            seq=seq,
            author_id=self.user.id,
            client_id=self.client_id,
            reply_to_id=self.reply_to,
            content=self.content,
            content_html=self.html,
        )
        session.add(message)
        await session.flush()
        for user_id in self.mentioned:
            session.add(
                Mention(message_id=message.id, user_id=user_id, room_id=self.room_id, seq=seq)
            )
        await append_event(
            session,
            room_id=self.room_id,
            type=EventType.message_created,
            message_id=message.id,
            seq=seq,
        )
        files = await attachments.link_to_message(
            session,
            user=self.user,
            room_id=self.room_id,
            message_id=message.id,
            attachment_ids=self.attachment_ids,
        )
        await search_index.index_message(session, message=message, new=True)
        await session.flush()
        return message, files


async def _by_client_id(
    session: AsyncSession,
    room_id: int,
    author_id: int,
    client_id: str | None,
) -> Message | None:
    if client_id is None:
        return None
    return await session.scalar(
        select(Message).where(
            Message.room_id == room_id,
            Message.author_id == author_id,
            Message.client_id == client_id,
        )
    )


async def _message_for(
    session: AsyncSession, user: User, message_id: int
) -> tuple[Message, Room, RoomMember | None]:
    message, member = await permissions.require_readable_message(
        session, user=user, message_id=message_id
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
) -> tuple[MessageRead, list[Published]]:
    """Change one's own message's text."""
    message, room, _member = await _message_for(session, user, message_id)
    permissions.require_author(user, message)
    if message.deleted_at is not None:
        raise Conflict("the message was deleted", code="message_deleted")
    if room.archived:
        raise Conflict("the room is archived", code="room_archived")
    _check_content(content, limit=max_length)
    html, mentioned = await _render(session, room.id, content)
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
    eraser: attachments.Eraser,
    reason: str | None = None,
) -> tuple[MessageRead, list[Published]]:
    """Delete to a tombstone: the row stays for order and replies, the content goes.

    ``reason``: a moderator's, kept in the audit trail.
    """
    message, _room, member = await _message_for(session, user, message_id)
    permissions.require_can_delete_message(user, member, message)
    if message.deleted_at is not None:
        return await message_view(session, message), []  # already a tombstone: no new event
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
    await attachments.remove_for_messages(session, eraser=eraser, message_ids=[message.id])
    return await _announce_change(session, message, EventType.message_deleted)


async def _announce_change(
    session: AsyncSession, message: Message, event_type: EventType
) -> tuple[MessageRead, list[Published]]:
    """Record the room event of a change to a message; its view and the event to publish."""
    event = await append_event(
        session, room_id=message.room_id, type=event_type, message_id=message.id
    )
    await session.flush()
    view = await message_view(session, message)
    return view, [_message_event(event_type, event.seq, view)]


async def history(
    session: AsyncSession,
    *,
    user: User,
    room_id: int,
    before: int | None,
    after: int | None,
    limit: int,
) -> tuple[list[MessageRead], int | None]:
    """A page of messages, newest first; ``before``/``after`` are message seqs."""
    if before is not None and after is not None:
        raise Invalid("give before or after, not both", field="after")
    await permissions.require_member(session, user=user, room_id=room_id)
    limit = max(1, min(limit, MAX_PAGE))
    # MariaDB would walk a big room's index from its newest message down to the cursor
    # ("ref" on room_id); the hint makes it seek straight to the cursor ("range").
    statement = (
        select(Message)
        .with_hint(Message, "FORCE INDEX (uq_messages_room_id_seq)", dialect_name="mysql")
        .where(Message.room_id == room_id)
    )
    if after is not None:
        statement = statement.where(Message.seq > after).order_by(Message.seq.asc())
    else:
        if before is not None:
            statement = statement.where(Message.seq < before)
        statement = statement.order_by(Message.seq.desc())
    rows = list((await session.scalars(statement.limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if after is not None:
        next_cursor = rows[-1].seq if more else None
        rows.reverse()
    else:
        next_cursor = rows[-1].seq if more else None
    return await message_views(session, rows), next_cursor


async def mark_read(
    session: AsyncSession, *, user: User, room_id: int, message_id: int
) -> tuple[int, list[Published]]:
    """Move the read marker forward to a message (never backward)."""
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
    return member.last_read_seq, [event]


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
