"""Moderation: ``/api/v1/admin/messages`` (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from cmschat.api.deps import AdminUser, Context, ResourceId, SessionDep, audits_reads
from cmschat.api.errors import ADMIN_ERRORS, responses
from cmschat.audit import service as audit
from cmschat.chat.messages import commands
from cmschat.chat.schemas import MessageRead
from cmschat.cms.moderation import service
from cmschat.cms.moderation.schemas import ModerationPage

router = APIRouter(prefix="/admin/messages", tags=["moderation"])
Id = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


@router.get("", response_model=ModerationPage, responses=responses(*ADMIN_ERRORS))
@audits_reads  # leaves an audit line: its unit of work writes
async def find_messages(
    admin: AdminUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=200, description="text the message contains")] = None,
    room_id: Id = None,
    author_id: Id = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    include_deleted: bool = False,
    cursor: Id = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
) -> ModerationPage:
    """Find messages in any room, by text, room, author and time."""
    items, next_cursor = await service.find_messages(
        session,
        filters=service.MessageFilters(
            query=q,
            room_id=room_id,
            author_id=author_id,
            since=since,
            until=until,
            include_deleted=include_deleted,
        ),
        before=cursor,
        limit=limit,
    )
    # Reading other people's messages is itself recorded: who, which filter, which messages.
    audit.record_read(
        session,
        action="message.searched",
        target_type="room" if room_id is not None else "message",
        target_id=room_id,
        filters={
            "query": audit.text_digest(q) if q else None,
            "room_id": room_id,
            "author_id": author_id,
            "since": since,
            "until": until,
            "include_deleted": include_deleted,
            "cursor": cursor,
            "message_ids": [item.id for item in items],
        },
    )
    return ModerationPage(items=items, next_cursor=next_cursor)


@router.delete("/{message_id}", response_model=MessageRead, responses=responses(*ADMIN_ERRORS, 404))
async def delete_message(
    message_id: ResourceId,
    admin: AdminUser,
    session: SessionDep,
    context: Context,
    reason: Annotated[str, Query(min_length=3, max_length=500, description="why; audited")],
) -> MessageRead:
    """Delete any message to a tombstone, with a reason the audit trail keeps."""
    return await commands.delete_message(
        session,
        user=admin,
        message_id=message_id,
        clock=context.clock,
        eraser=context.eraser,
        reason=reason.strip(),
    )
