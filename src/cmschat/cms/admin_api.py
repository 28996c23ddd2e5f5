"""The console's overview: ``/api/v1/admin/rooms`` and ``/api/v1/admin/dashboard`` (admins).

Changing a room (rename, archive, members) goes through the rooms API, where admins may
act on any room; legal holds through ``/admin/retention``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cmschat.accounts.schemas import AdminUserRead
from cmschat.api.deps import AdminUser, Context, ResourceId, SessionDep, audits_reads
from cmschat.api.errors import ADMIN_ERRORS, responses
from cmschat.audit import service as audit
from cmschat.chat.models import RoomKind
from cmschat.cms import overview
from cmschat.cms.schemas import AdminMemberRead, AdminRoomDetail, AdminRoomPage, Dashboard
from cmschat.errors import NotFound

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/rooms", response_model=AdminRoomPage, responses=responses(*ADMIN_ERRORS))
async def list_rooms(
    admin: AdminUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
    kind: RoomKind | None = None,
    archived: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=overview.ROOM_PAGE)] = 50,
) -> AdminRoomPage:
    """Every room, with member counts, last activity and legal holds."""
    rooms, next_cursor = await overview.list_rooms(
        session, query=q, kind=kind, archived=archived, cursor=cursor, limit=limit
    )
    return AdminRoomPage(items=rooms, next_cursor=next_cursor)


@router.get(
    "/rooms/{room_id}", response_model=AdminRoomDetail, responses=responses(*ADMIN_ERRORS, 404)
)
@audits_reads  # leaves an audit line: its unit of work writes
async def get_room(room_id: ResourceId, admin: AdminUser, session: SessionDep) -> AdminRoomDetail:
    """One room and its members."""
    found, _ = await overview.list_rooms(session, only_id=room_id)
    if not found:
        raise NotFound("no such room")
    [summary] = found
    members = await overview.room_members(session, room_id=room_id)
    audit.record_read(
        session, action="room.viewed", target_type="room", target_id=room_id, filters={}
    )
    return AdminRoomDetail(
        **summary.model_dump(),
        members=[
            AdminMemberRead(user=AdminUserRead.model_validate(user), role=role)
            for user, role in members
        ],
    )


@router.get("/dashboard", response_model=Dashboard, responses=responses(*ADMIN_ERRORS))
async def dashboard(admin: AdminUser, session: SessionDep, context: Context) -> Dashboard:
    """Users, rooms, today's messages, storage, the audit chain and the last purge."""
    return await overview.dashboard(
        session,
        now=context.clock.now(),
        online=await context.presence.count(),
        online_here=context.hub.online_users(),
    )
