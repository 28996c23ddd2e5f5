"""Canned replies: ``/api/v1/admin/canned-replies`` (admins manage, agents read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from cmschat.api.deps import AdminUser, ResourceId, SessionDep, StaffUser
from cmschat.api.errors import ADMIN_BODY_ERRORS, ADMIN_ERRORS, responses
from cmschat.cms.canned_replies import service
from cmschat.cms.canned_replies.schemas import (
    CannedReplyCreate,
    CannedReplyList,
    CannedReplyRead,
    CannedReplyUpdate,
)

router = APIRouter(prefix="/admin/canned-replies", tags=["canned replies"])


@router.get("", response_model=CannedReplyList, responses=responses(*ADMIN_ERRORS))
async def list_replies(
    staff: StaffUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=32, description="shortcut prefix")] = None,
) -> CannedReplyList:
    """Every canned reply (agents too: they insert them with ``/``)."""
    replies = await service.list_replies(session, query=q)
    return CannedReplyList(items=[CannedReplyRead.model_validate(r) for r in replies])


@router.post(
    "",
    status_code=201,
    response_model=CannedReplyRead,
    responses=responses(*ADMIN_BODY_ERRORS, 409),
)
async def create_reply(
    body: CannedReplyCreate, admin: AdminUser, session: SessionDep
) -> CannedReplyRead:
    """Add a canned reply."""
    reply = await service.create_reply(
        session, shortcut=body.shortcut, title=body.title, body=body.body
    )
    return CannedReplyRead.model_validate(reply)


@router.patch(
    "/{reply_id}", response_model=CannedReplyRead, responses=responses(*ADMIN_BODY_ERRORS, 404, 409)
)
async def update_reply(
    reply_id: ResourceId, body: CannedReplyUpdate, admin: AdminUser, session: SessionDep
) -> CannedReplyRead:
    """Change a canned reply."""
    reply = await service.update_reply(
        session, reply_id=reply_id, shortcut=body.shortcut, title=body.title, body=body.body
    )
    return CannedReplyRead.model_validate(reply)


@router.delete(
    "/{reply_id}", status_code=204, response_class=Response, responses=responses(*ADMIN_ERRORS, 404)
)
async def delete_reply(reply_id: ResourceId, admin: AdminUser, session: SessionDep) -> Response:
    """Remove a canned reply."""
    await service.delete_reply(session, reply_id=reply_id)
    return Response(status_code=204)
