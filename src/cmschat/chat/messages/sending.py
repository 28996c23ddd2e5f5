"""Sending a message: the one service call behind POST /rooms/{id}/messages and the
WebSocket's ``message.send``, so both get the same checks, idempotency and rate limit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.attachments import service as attachments
from cmschat.attachments.models import Attachment
from cmschat.audit import service as audit
from cmschat.chat import permissions, rendering, search_index
from cmschat.chat.events import append_event, next_seq
from cmschat.chat.messages.views import message_event, message_view, view_of
from cmschat.chat.models import EventType, Mention, Message, RoomMember
from cmschat.chat.ratelimit import SendLimiter, check_send_rate
from cmschat.chat.schemas import MessageRead
from cmschat.errors import Conflict, Invalid
from cmschat.events import queue_events


class Draft(Protocol):
    """What a client sends: the HTTP body (``MessageCreate``) or the WebSocket frame."""

    @property
    def content(self) -> str: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def reply_to(self) -> int | None: ...
    @property
    def attachment_ids(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class SendRules:
    """The instance's limits on sends: message length and the per-user send rate."""

    max_length: int
    limiter: SendLimiter | None = None
    """None: no rate limit (``CMSCHAT_CHAT__SEND_RATE`` off)."""


def check_content(content: str, *, limit: int, has_files: bool = False) -> None:
    """Refuse an empty (and fileless) or too long message text."""
    if not content.strip() and not has_files:
        raise Invalid("a message needs some text (or a file)", field="content")
    if len(content) > limit:
        raise Invalid(f"a message is at most {limit} characters", field="content", code="too_long")


async def render_content(
    session: AsyncSession, room_id: int, content: str
) -> tuple[str, list[int]]:
    """Safe HTML, and the ids of room members it mentions (others could not read it)."""
    html, names = rendering.render_unlinked(content)
    if not names:
        return html, []
    rows = await session.execute(
        select(User.username, User.id)
        .join(RoomMember, RoomMember.user_id == User.id)
        .where(RoomMember.room_id == room_id, User.username.in_(names))
    )
    known = {username: user_id for username, user_id in rows.all()}
    if not known:
        return html, []
    return rendering.render(content, known_users=known), sorted(set(known.values()))


def link_mentions(
    known: Mapping[tuple[int, str], int], sends: Sequence[tuple[int, str, Sequence[str]]]
) -> list[tuple[str | None, list[int]]]:
    """``render_content``'s answer for many sends, given the room members they may mention
    (``known``: (room id, username) to user id, ``batch_sql.checked``): per ``(room id,
    content, mentioned names from render_unlinked)``, the HTML with mentions linked (None:
    the unlinked HTML stands) and the ids of the room members mentioned."""
    linked: list[tuple[str | None, list[int]]] = []
    for room_id, content, names in sends:
        mine = {name: known[room_id, name] for name in names if (room_id, name) in known}
        html = rendering.render(content, known_users=mine) if mine else None
        linked.append((html, sorted(set(mine.values()))))
    return linked


async def send_message(
    session: AsyncSession, *, user: User, room_id: int, draft: Draft, rules: SendRules
) -> tuple[MessageRead, bool]:
    """Store a message and queue its event; a repeated ``client_id`` returns the first
    message (and ``False``: nothing new was stored).

    The send rate is checked after the repeat lookup (a retry of a stored message costs
    nothing) and the checks of the input (a refused message costs nothing either).
    """
    client_id, reply_to = draft.client_id, draft.reply_to
    room, _member = await permissions.require_member(session, user=user, room_id=room_id)
    if client_id is not None:
        first = await _by_client_id(session, room_id, user.id, client_id)
        if first is not None:
            return await message_view(session, first), False
    if room.archived:
        raise Conflict("the room is archived", code="room_archived")
    check_content(draft.content, limit=rules.max_length, has_files=bool(draft.attachment_ids))
    if reply_to is not None:
        parent = await session.get(Message, reply_to)
        if parent is None or parent.room_id != room_id:
            raise Invalid("reply_to must be a message of this room", field="reply_to")
    await check_send_rate(rules.limiter, user_id=user.id)
    html, mentioned = await render_content(session, room_id, draft.content)
    store = _Store(
        user=user,
        room_id=room_id,
        client_id=client_id,
        reply_to=reply_to,
        content=draft.content,
        html=html,
        mentioned=mentioned,
        attachment_ids=list(dict.fromkeys(draft.attachment_ids)),
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
            return await message_view(session, first), False
    audit.record(
        session,
        action="message.created",
        target_type="message",
        target_id=message.id,
        changes={
            "room_id": room_id,
            "content": audit.text_digest(draft.content),
            "attachment_ids": [file.id for file in files],
        },
    )
    # Everything the view needs is at hand: no queries to read back what was just written.
    view = view_of(message, user, mentioned, files)
    queue_events(session, [message_event(EventType.message_created, message.seq, view)])
    return view, True


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
    session: AsyncSession, room_id: int, author_id: int, client_id: str
) -> Message | None:
    return await session.scalar(
        select(Message).where(
            Message.room_id == room_id,
            Message.author_id == author_id,
            Message.client_id == client_id,
        )
    )
