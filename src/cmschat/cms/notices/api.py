"""Notices: ``GET /api/v1/notices`` for everyone signed in, ``/api/v1/admin/notices`` for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.api.deps import AdminUser, Context, CurrentUser, ResourceId, SessionDep
from cmschat.api.errors import ADMIN_BODY_ERRORS, ADMIN_ERRORS, SIGNED_IN_ERRORS, responses
from cmschat.cms.notices import service
from cmschat.cms.notices.models import Notice, NoticeState
from cmschat.cms.notices.schemas import (
    AdminNoticePage,
    AdminNoticeRead,
    NoticeCreate,
    NoticePage,
    NoticeRead,
    NoticeUpdate,
)

router = APIRouter(tags=["notices"])
ADMIN = "/admin/notices"


async def _admin_view(session: AsyncSession, notice: Notice) -> AdminNoticeRead:
    return AdminNoticeRead(
        id=notice.id,
        title=notice.title,
        body_html=notice.body_html,
        published_at=notice.published_at,
        state=notice.state,
        room_ids=await service.room_ids_of(session, notice.id),
        created_at=notice.created_at,
        created_by=notice.created_by,
        updated_at=notice.updated_at,
    )


@router.get("/notices", response_model=NoticePage, responses=responses(*SIGNED_IN_ERRORS))
async def list_published(user: CurrentUser, session: SessionDep) -> NoticePage:
    """Published notices for you (everyone's, and your rooms'), newest first."""
    notices = await service.visible_notices(session, user=user)
    return NoticePage(items=[NoticeRead.model_validate(n) for n in notices], next_cursor=None)


@router.get(ADMIN, response_model=AdminNoticePage, responses=responses(*ADMIN_ERRORS))
async def list_notices(
    admin: AdminUser,
    session: SessionDep,
    state: NoticeState | None = None,
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="id to go below")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AdminNoticePage:
    """Every notice, drafts included, newest first."""
    notices = await service.list_notices(session, state=state, before=cursor, limit=limit + 1)
    more = len(notices) > limit
    items = [await _admin_view(session, n) for n in notices[:limit]]
    return AdminNoticePage(items=items, next_cursor=str(items[-1].id) if more else None)


@router.post(
    ADMIN, status_code=201, response_model=AdminNoticeRead, responses=responses(*ADMIN_BODY_ERRORS)
)
async def create_notice(
    body: NoticeCreate, admin: AdminUser, session: SessionDep
) -> AdminNoticeRead:
    """Write a notice; it stays a draft until published."""
    notice = await service.create_notice(
        session, title=body.title, body_html=body.body_html, room_ids=body.room_ids
    )
    return await _admin_view(session, notice)


@router.get(
    f"{ADMIN}/{{notice_id}}",
    response_model=AdminNoticeRead,
    responses=responses(*ADMIN_ERRORS, 404),
)
async def get_notice(
    notice_id: ResourceId, admin: AdminUser, session: SessionDep
) -> AdminNoticeRead:
    """One notice."""
    return await _admin_view(session, await service.get_notice(session, notice_id=notice_id))


@router.patch(
    f"{ADMIN}/{{notice_id}}",
    response_model=AdminNoticeRead,
    responses=responses(*ADMIN_BODY_ERRORS, 404),
)
async def update_notice(
    notice_id: ResourceId,
    body: NoticeUpdate,
    admin: AdminUser,
    session: SessionDep,
) -> AdminNoticeRead:
    """Edit a notice; a published one reaches its audience again."""
    notice = await service.update_notice(
        session,
        notice_id=notice_id,
        title=body.title,
        body_html=body.body_html,
        room_ids=body.room_ids,
        fields=body.model_fields_set,
    )
    return await _admin_view(session, notice)


@router.post(
    f"{ADMIN}/{{notice_id}}/publish",
    response_model=AdminNoticeRead,
    responses=responses(*ADMIN_ERRORS, 404, 409),
)
async def publish_notice(
    notice_id: ResourceId, admin: AdminUser, session: SessionDep, context: Context
) -> AdminNoticeRead:
    """Publish: members see it at once (``notice.published``) and in ``GET /notices``."""
    notice = await service.publish_notice(session, notice_id=notice_id, clock=context.clock)
    return await _admin_view(session, notice)


@router.post(
    f"{ADMIN}/{{notice_id}}/unpublish",
    response_model=AdminNoticeRead,
    responses=responses(*ADMIN_ERRORS, 404, 409),
)
async def unpublish_notice(
    notice_id: ResourceId, admin: AdminUser, session: SessionDep
) -> AdminNoticeRead:
    """Take a notice down (clients drop it on ``notice.unpublished``)."""
    notice = await service.unpublish_notice(session, notice_id=notice_id)
    return await _admin_view(session, notice)


@router.delete(
    f"{ADMIN}/{{notice_id}}",
    status_code=204,
    response_class=Response,
    responses=responses(*ADMIN_ERRORS, 404),
)
async def delete_notice(notice_id: ResourceId, admin: AdminUser, session: SessionDep) -> Response:
    """Delete a notice for good."""
    await service.delete_notice(session, notice_id=notice_id)
    return Response(status_code=204)
