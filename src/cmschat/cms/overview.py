"""The console's view of the whole server: rooms with their numbers, and the dashboard."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import Role, User
from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.audit import chain
from cmschat.chat.models import MemberRole, Message, Room, RoomKind, RoomMember
from cmschat.cms.schemas import AuditStatus, Dashboard, RoomSummary
from cmschat.jobs.lease import last_completed
from cmschat.pagination import decode_cursor, encode_cursor
from cmschat.retention.job import RETENTION_JOB
from cmschat.retention.models import RoomRetention

ROOM_PAGE = 200
CURSOR_TAG = "r"
DASHBOARD_AUDIT_TAIL = 1000


async def list_rooms(
    session: AsyncSession,
    *,
    query: str | None = None,
    kind: RoomKind | None = None,
    archived: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
    only_id: int | None = None,
) -> tuple[list[RoomSummary], str | None]:
    """Every room (direct ones too), in id order, with member counts and last activity."""
    limit = max(1, min(limit, ROOM_PAGE))
    statement = select(Room).order_by(Room.id).limit(limit + 1)
    if query:
        escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(func.lower(Room.name).like(f"%{escaped}%", escape="\\"))
    if kind is not None:
        statement = statement.where(Room.kind == kind)
    if archived is not None:
        statement = statement.where(Room.archived == archived)
    if cursor:
        statement = statement.where(Room.id > decode_cursor(CURSOR_TAG, cursor))
    if only_id is not None:
        statement = statement.where(Room.id == only_id)
    rooms = list((await session.scalars(statement)).all())
    more = len(rooms) > limit
    rooms = rooms[:limit]
    ids = [room.id for room in rooms]
    members = dict(
        (
            await session.execute(
                select(RoomMember.room_id, func.count())
                .where(RoomMember.room_id.in_(ids))
                .group_by(RoomMember.room_id)
            )
        ).all()
    )
    last_at = dict(
        (
            await session.execute(
                select(Message.room_id, func.max(Message.created_at))
                .where(Message.room_id.in_(ids))
                .group_by(Message.room_id)
            )
        ).all()
    )
    held = set(
        (
            await session.scalars(
                select(RoomRetention.room_id).where(
                    RoomRetention.room_id.in_(ids), RoomRetention.legal_hold.is_(True)
                )
            )
        ).all()
    )
    summaries = [
        RoomSummary(
            id=room.id,
            kind=room.kind,
            name=room.name,
            topic=room.topic,
            archived=room.archived,
            member_count=int(members.get(room.id, 0)),
            last_seq=room.last_seq,
            last_message_at=last_at.get(room.id),
            legal_hold=room.id in held,
        )
        for room in rooms
    ]
    return summaries, encode_cursor(CURSOR_TAG, rooms[-1].id) if more else None


async def room_members(session: AsyncSession, *, room_id: int) -> list[tuple[User, MemberRole]]:
    """A room's members and their roles."""
    rows = await session.execute(
        select(User, RoomMember.role)
        .join(RoomMember, RoomMember.user_id == User.id)
        .where(RoomMember.room_id == room_id)
        .order_by(User.username)
    )
    return [(user, role) for user, role in rows.all()]


async def dashboard(
    session: AsyncSession, *, now: datetime, online: int, online_here: int
) -> Dashboard:
    """Counts for the dashboard, and a check of the audit chain's newest events."""
    by_role = dict(
        (
            await session.execute(
                select(User.role, func.count()).where(User.is_active.is_(True)).group_by(User.role)
            )
        ).all()
    )
    users_total = await session.scalar(select(func.count()).select_from(User))
    rooms_total = await session.scalar(select(func.count()).select_from(Room))
    rooms_archived = await session.scalar(
        select(func.count()).select_from(Room).where(Room.archived.is_(True))
    )
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    messages_today = await session.scalar(
        select(func.count()).select_from(Message).where(Message.created_at >= midnight)
    )
    storage = await session.scalar(
        select(func.coalesce(func.sum(Attachment.size), 0)).where(
            Attachment.state == AttachmentState.ready
        )
    )
    return Dashboard(
        users_total=int(users_total or 0),
        users_active=sum(int(n) for n in by_role.values()),
        admins=int(by_role.get(Role.admin, 0)),
        agents=int(by_role.get(Role.agent, 0)),
        online=online,
        online_here=online_here,
        rooms_total=int(rooms_total or 0),
        rooms_archived=int(rooms_archived or 0),
        messages_today=int(messages_today or 0),
        storage_bytes=int(storage or 0),
        audit=await _audit_status(session),
        retention_last_completed_at=await last_completed(session, name=RETENTION_JOB),
    )


async def _audit_status(session: AsyncSession) -> AuditStatus:
    verdict = await chain.verify(session, last=DASHBOARD_AUDIT_TAIL)
    return AuditStatus(
        ok=verdict.ok,
        checked=verdict.checked,
        head_id=verdict.head_id,
        message=verdict.describe(),
    )
