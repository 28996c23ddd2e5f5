"""``GET /api/v1/admin/monitoring``: the console's charts, instance health and alerts (admins)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from cmschat.api.deps import AdminUser, Context, SessionDep
from cmschat.api.errors import ADMIN_ERRORS, responses
from cmschat.monitoring import service
from cmschat.monitoring.alerts import firing_alerts
from cmschat.monitoring.schemas import MonitoringRead

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/monitoring", response_model=MonitoringRead, responses=responses(*ADMIN_ERRORS))
async def monitoring(
    admin: AdminUser,
    session: SessionDep,
    context: Context,
    hours: Annotated[
        int,
        Query(
            ge=1, le=service.MAX_HOURS, description="how many hours of per-minute traffic to return"
        ),
    ] = 6,
    utc_offset_minutes: Annotated[
        int, Query(ge=-720, le=840, description="the viewer's UTC offset, for calendar days")
    ] = 0,
) -> MonitoringRead:
    """Instances' health, traffic per minute, 7 days of activity and firing alerts."""
    now = context.clock.now()
    since = now - timedelta(hours=hours)
    settings = context.settings.monitoring
    # Alertmanager is asked while the database answers.
    alerts = asyncio.create_task(
        firing_alerts(url=settings.alertmanager_url, seconds=settings.alertmanager_timeout_seconds)
    )
    try:
        instances = await service.instances(session, since=since, now=now)
        traffic = await service.traffic(session, since=since)
        per_hour = await service.messages_per_hour(session, now=now)
        days = await service.days(session, now=now, utc_offset_minutes=utc_offset_minutes)
    except BaseException:
        alerts.cancel()
        raise
    return MonitoringRead(
        now=now,
        hours=hours,
        instances=instances,
        traffic=traffic,
        messages_per_hour=per_hour,
        days=days,
        alerts=await alerts,
    )
