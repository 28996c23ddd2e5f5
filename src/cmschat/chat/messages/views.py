"""The API and event shapes of messages, built in a fixed number of queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat import jsonbytes
from cmschat.accounts.models import User
from cmschat.attachments import service as attachments
from cmschat.attachments.models import Attachment
from cmschat.attachments.schemas import AttachmentRead
from cmschat.chat.models import EventType, Mention, Message
from cmschat.chat.schemas import MessageRead, UserBrief
from cmschat.events import Published

ATTACHMENT_FIELDS = tuple(AttachmentRead.model_fields)
"""``AttachmentRead``'s fields, in its order."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A sent message as its sender is answered: its ``MessageRead`` fields (the model's
    ``model_dump()``: datetimes as objects) and their JSON, serialised once for the HTTP
    answer, the room event and the WebSocket ack (the bytes the model would write)."""

    data: dict[str, Any]
    json: bytes

    @classmethod
    def of(cls, data: dict[str, Any]) -> Sent:
        """``data`` (``MessageRead``'s keys, in its order) and its JSON."""
        return cls(data, jsonbytes.dumps(data))

    @classmethod
    def of_model(cls, view: MessageRead) -> Sent:
        """A view built as a model (a repeated client id, a send retried alone)."""
        return cls.of(view.model_dump())


def sent_event(event_type: EventType, seq: int, sent: Sent) -> Published:
    """``message_event`` for a sent message: its JSON goes into the frame as it is."""
    return Published(
        room_id=sent.data["room_id"],
        seq=seq,
        type=event_type.value,
        payload={"message": jsonbytes.raw(sent.json)},
    )


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
        views.append(view_of(m, author, mentions.get(m.id, []), files.get(m.id, [])))
    return views


def view_of(
    m: Message, author: User | None, mentions: Sequence[int], files: Sequence[Attachment]
) -> MessageRead:
    """The API shape of a message whose author, mentions and files are already at hand."""
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


def message_event(event_type: EventType, seq: int, view: MessageRead) -> Published:
    """The room event of a message change, carrying the message's view."""
    return Published(
        room_id=view.room_id,
        seq=seq,
        type=event_type.value,
        payload={"message": view.model_dump(mode="json")},
    )
