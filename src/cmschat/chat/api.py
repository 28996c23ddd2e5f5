"""Routes for rooms, membership, messages and read markers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.api.deps import Context, CurrentUser, ResourceId, SessionDep, reads_only
from cmschat.api.errors import (
    ROOM_BODY_ERRORS,
    ROOM_ERRORS,
    ROOM_SEND_ERRORS,
    SIGNED_IN_ERRORS,
    SIGNED_IN_QUERY_ERRORS,
    responses,
)
from cmschat.api.responses import JSONBytes
from cmschat.chat import listing, rooms
from cmschat.chat import search as search_module
from cmschat.chat.messages import commands, reads
from cmschat.chat.schemas import (
    ChannelPage,
    ChannelRead,
    MemberRead,
    MembersAdd,
    MemberUpdate,
    MessageCreate,
    MessagePage,
    MessageRead,
    MessageUpdate,
    ReadMarker,
    ReadState,
    RoomCreate,
    RoomPage,
    RoomRead,
    RoomUpdate,
    UserBrief,
)
from cmschat.context import AppContext
from cmschat.db.driver_sql import driver_of

router = APIRouter(tags=["chat"])
Seq = Annotated[int | None, Query(ge=0, le=2**63 - 1)]


@router.get("/rooms", response_model=RoomPage, responses=responses(*SIGNED_IN_ERRORS))
async def list_rooms(user: CurrentUser, session: SessionDep) -> RoomPage:
    """The caller's rooms, most recently active first, with unread counts."""
    return RoomPage(items=await listing.list_rooms(session, user=user), next_cursor=None)


@router.post(
    "/rooms",
    status_code=201,
    response_model=RoomRead,
    responses={
        200: {"model": RoomRead, "description": "the pair's direct room"},
        **responses(*ROOM_BODY_ERRORS),
    },
)
async def create_room(
    body: RoomCreate, user: CurrentUser, session: SessionDep, response: Response
) -> RoomRead:
    """Create a room; for a pair that already has a direct room, that room (200)."""
    room, created = await rooms.create_room(
        session,
        creator=user,
        kind=body.kind,
        name=body.name,
        topic=body.topic,
        member_ids=body.member_ids,
    )
    if not created:
        response.status_code = 200
    return await listing.room_view(session, user=user, room_id=room.id)


@router.get("/channels", response_model=ChannelPage, responses=responses(*SIGNED_IN_ERRORS))
async def list_channels(user: CurrentUser, session: SessionDep) -> ChannelPage:
    """Public channels anyone may join."""
    found = await rooms.list_channels(session)
    return ChannelPage(
        items=[ChannelRead(id=r.id, name=r.name, topic=r.topic) for r in found], next_cursor=None
    )


@router.get("/rooms/{room_id}", response_model=RoomRead, responses=responses(*ROOM_ERRORS, 422))
async def get_room(room_id: ResourceId, user: CurrentUser, session: SessionDep) -> RoomRead:
    """One of the caller's rooms."""
    return await listing.room_view(session, user=user, room_id=room_id)


@router.patch("/rooms/{room_id}", response_model=RoomRead, responses=responses(*ROOM_BODY_ERRORS))
async def update_room(
    room_id: ResourceId, body: RoomUpdate, user: CurrentUser, session: SessionDep
) -> RoomRead:
    """Rename, change the topic, archive: the room's owner or moderators, or an admin."""
    room = await rooms.update_room(
        session,
        user=user,
        room_id=room_id,
        name=body.name,
        topic=body.topic,
        archived=body.archived,
        fields=body.model_fields_set,
    )
    return (await listing.room_views(session, user=user, rooms=[room]))[0]


@router.post(
    "/rooms/{room_id}/members", response_model=RoomRead, responses=responses(*ROOM_BODY_ERRORS)
)
async def add_members(
    room_id: ResourceId, body: MembersAdd, user: CurrentUser, session: SessionDep
) -> RoomRead:
    """Add members, or join a channel (``user_ids`` = yourself)."""
    room = await rooms.add_members(session, user=user, room_id=room_id, user_ids=body.user_ids)
    return (await listing.room_views(session, user=user, rooms=[room]))[0]


@router.delete(
    "/rooms/{room_id}/members/{user_id}",
    status_code=204,
    response_class=Response,
    responses=responses(*ROOM_BODY_ERRORS),
)
async def remove_member(
    room_id: ResourceId,
    user_id: ResourceId,
    user: CurrentUser,
    session: SessionDep,
) -> Response:
    """Leave (your own id) or remove a member (owner, moderators, admins)."""
    await rooms.remove_member(session, user=user, room_id=room_id, user_id=user_id)
    return Response(status_code=204)


@router.patch(
    "/rooms/{room_id}/members/{user_id}",
    response_model=MemberRead,
    responses=responses(*ROOM_BODY_ERRORS),
)
async def set_member_role(
    room_id: ResourceId,
    user_id: ResourceId,
    body: MemberUpdate,
    user: CurrentUser,
    session: SessionDep,
) -> MemberRead:
    """Make a member owner, moderator or member: the owner or an admin."""
    member, target = await rooms.set_member_role(
        session, user=user, room_id=room_id, user_id=user_id, role=body.role
    )
    return MemberRead(
        user=UserBrief.model_validate(target), role=member.role, last_read_seq=member.last_read_seq
    )


# History pages and sends with plainly valid inputs are served by chat/hot_routes.py
# (tried before these); these answer the rest and document both. Change both alike.
@router.get(
    "/rooms/{room_id}/messages", response_model=MessagePage, responses=responses(*ROOM_ERRORS, 422)
)
async def history(
    room_id: ResourceId,
    user: CurrentUser,
    session: SessionDep,
    context: Context,
    before: Seq = None,
    after: Seq = None,
    limit: Annotated[int, Query(ge=1, le=reads.MAX_PAGE)] = 50,
) -> Response:
    """Messages newest first; page back with ``before``, forward with ``after``."""
    return await history_page(session, user, context, room_id, (before, after, limit))


async def history_page(
    session: AsyncSession,
    user: User,
    context: AppContext,
    room_id: int,
    page: tuple[int | None, int | None, int],
) -> Response:
    """One page of ``(before, after, limit)`` in the request's unit of work: the bytes the
    hot route writes (``chat/hot_routes.py`` reads them on a bare pooled connection)."""
    before, after, limit = page
    # Already in MessagePage's shape (response_model documents it): written once, without
    # validating every row again.
    body = await reads.history_json(
        await driver_of(session),
        user_id=user.id,
        room_id=room_id,
        before=before,
        after=after,
        limit=limit,
        caches=context.caches,
    )
    return JSONBytes(body)


async def admitted_send(context: Context) -> AsyncIterator[None]:
    """A place in the process's admission for one send, taken before anything else of the
    request (signing in reads the database): a full server refuses at once, ``busy``."""
    async with context.admission.sends("http"):
        yield


# Before ``CurrentUser``: FastAPI solves dependencies in the order they are declared.
Admitted = Annotated[None, Depends(admitted_send, scope="function")]


@router.post(
    "/rooms/{room_id}/messages",
    status_code=201,
    response_model=MessageRead,
    responses={
        200: {"model": MessageRead, "description": "a repeated client_id"},
        **responses(*ROOM_SEND_ERRORS),
    },
)
@reads_only  # the group commit writes the message; the request's own work is signing in
async def send_message(
    room_id: ResourceId,
    body: MessageCreate,
    _admitted: Admitted,
    user: CurrentUser,
    context: Context,
) -> Response:
    """Send; repeating a ``client_id`` returns the first message (200), never a duplicate."""
    # Through the group commit: stored with the other sends of its moment, in one
    # transaction; answered once that transaction has committed. Its JSON is the event's.
    view, created = await context.sends.send(user=user, room_id=room_id, draft=body)
    return JSONBytes(view.json, status_code=201 if created else 200)


@router.patch(
    "/messages/{message_id}", response_model=MessageRead, responses=responses(*ROOM_BODY_ERRORS)
)
async def edit_message(
    message_id: ResourceId,
    body: MessageUpdate,
    user: CurrentUser,
    session: SessionDep,
    context: Context,
) -> MessageRead:
    """Edit one's own message."""
    return await commands.edit_message(
        session,
        user=user,
        message_id=message_id,
        content=body.content,
        max_length=context.settings.chat.max_message_length,
        clock=context.clock,
    )


@router.delete(
    "/messages/{message_id}", response_model=MessageRead, responses=responses(*ROOM_ERRORS, 422)
)
async def delete_message(
    message_id: ResourceId, user: CurrentUser, session: SessionDep, context: Context
) -> MessageRead:
    """Delete to a tombstone: the author, room owner or moderators, or an admin."""
    return await commands.delete_message(
        session, user=user, message_id=message_id, clock=context.clock, eraser=context.eraser
    )


@router.post(
    "/rooms/{room_id}/read", response_model=ReadState, responses=responses(*ROOM_BODY_ERRORS)
)
async def mark_read(
    room_id: ResourceId, body: ReadMarker, user: CurrentUser, session: SessionDep
) -> ReadState:
    """Move the read marker forward to a message."""
    seq = await commands.mark_read(session, user=user, room_id=room_id, message_id=body.message_id)
    return ReadState(room_id=room_id, last_read_seq=seq)


@router.get("/search", response_model=MessagePage, responses=responses(*SIGNED_IN_QUERY_ERRORS))
async def search(
    user: CurrentUser,
    session: SessionDep,
    context: Context,
    q: Annotated[str, Query(min_length=1, max_length=200, description="text to find")],
    room_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=search_module.MAX_RESULTS)] = 20,
) -> MessagePage:
    """Messages containing ``q`` (Korean inside longer words too), from the caller's rooms."""
    items = await search_module.search_where_fresh(
        context.db, session, user=user, query=q, room_id=room_id, limit=limit
    )
    return MessagePage(items=items, next_cursor=None)
