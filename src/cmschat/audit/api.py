"""The console's audit trail: ``/api/v1/admin/audit`` (admins only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from cmschat.api.deps import AdminUser, Context, SessionDep, audits_reads
from cmschat.api.errors import ADMIN_ERRORS, responses
from cmschat.audit import chain, listing
from cmschat.audit import service as audit
from cmschat.audit.schemas import AuditEventRead, AuditPage, VerifyResult
from cmschat.db.actors import user_actor

router = APIRouter(prefix="/admin/audit", tags=["admin"])


def _filters(
    actor: Annotated[str | None, Query(max_length=64, description="username or job")] = None,
    actor_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="exact, or a prefix ending in *")
    ] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="from this time (inclusive)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="before this time")] = None,
) -> listing.Filters:
    return listing.Filters(
        actor=actor,
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )


FiltersDep = Annotated[listing.Filters, Depends(_filters)]


@router.get("", response_model=AuditPage, responses=responses(*ADMIN_ERRORS))
@audits_reads  # leaves an audit line: its unit of work writes
async def list_audit_events(
    admin: AdminUser,
    session: SessionDep,
    filters: FiltersDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_PAGE)] = 100,
) -> AuditPage:
    """Audit events, newest first, filtered by actor, action, target and time."""
    events, next_cursor = await listing.list_events(
        session, filters=filters, cursor=cursor, limit=limit
    )
    # The trail names people and their addresses: reading it leaves a line, as exporting does.
    audit.record_read(
        session,
        action="audit.viewed",
        target_type="audit",
        filters=vars(filters) | {"cursor": cursor},
    )
    return AuditPage(
        items=[AuditEventRead.model_validate(e) for e in events], next_cursor=next_cursor
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, **responses(*ADMIN_ERRORS)},
)
@audits_reads  # leaves an audit line: its unit of work writes
async def export_audit_events(
    admin: AdminUser,
    session: SessionDep,
    context: Context,
    filters: FiltersDep,
) -> StreamingResponse:
    """The matching events as CSV, oldest first; cells are escaped against formulas."""
    # Reading the whole trail out is itself worth a line in it.
    audit.record(
        session,
        action="audit.exported",
        target_type="audit",
        changes={k: v for k, v in vars(filters).items() if v is not None},
    )

    async def rows() -> AsyncIterator[str]:
        # The request's transaction ends when this route returns; the body streams after.
        async with context.db.unit_of_work(
            user_actor(admin.id), actor_name=admin.username
        ) as reader:
            async for line in listing.export_csv(reader, filters=filters):
                yield line

    stamp = context.clock.now().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cmschat-audit-{stamp}.csv"'},
    )


@router.get("/verify", response_model=VerifyResult, responses=responses(*ADMIN_ERRORS))
async def verify_audit_chain(admin: AdminUser, session: SessionDep) -> VerifyResult:
    """Walk the hash chain and report whether it is intact, or the first bad event."""
    verdict = await chain.verify(session)
    return VerifyResult(
        ok=verdict.ok,
        checked=verdict.checked,
        head_id=verdict.head_id,
        head_hash=verdict.head_hash,
        first_bad_id=verdict.first_bad_id,
        problem=verdict.problem,
        message=verdict.describe(),
    )
