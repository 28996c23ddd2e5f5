"""Reading the charts' series: instance samples, and chat activity from the messages table.

Every query is bounded: samples by their time range (at most 48 h of minutes), activity
by 7 days grouped into 168 hours and 7 days, instances by ``MAX_INSTANCES``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.chat.models import Message
from cmschat.monitoring.models import InstanceSample
from cmschat.monitoring.sampler import STOPPED
from cmschat.monitoring.schemas import DayRead, HourRead, InstanceRead, InstanceState, MinuteRead

MAX_HOURS = 48
ACTIVITY_DAYS = 7
MAX_INSTANCES = 50
SILENT_AFTER = timedelta(minutes=3)
"""An instance samples every minute: three missed minutes means it is not running."""


def _parse_checks(stored: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in stored.split(",") if item)
    return {name: state for name, _, state in pairs}


async def instances(session: AsyncSession, *, since: datetime, now: datetime) -> list[InstanceRead]:
    """Every instance that sampled since ``since``, by its newest sample."""
    newest = (
        select(InstanceSample.instance, func.max(InstanceSample.minute).label("minute"))
        .where(InstanceSample.minute >= since)
        .group_by(InstanceSample.instance)
        .subquery()
    )
    rows = await session.scalars(
        select(InstanceSample)
        .join(
            newest,
            (InstanceSample.instance == newest.c.instance)
            & (InstanceSample.minute == newest.c.minute),
        )
        .order_by(InstanceSample.host, InstanceSample.instance)
        .limit(MAX_INSTANCES)
    )
    result = []
    for row in rows:
        checks = _parse_checks(row.checks)
        state: InstanceState = "ready" if row.ready else "not_ready"
        if checks == STOPPED:
            state = "stopped"
        elif row.minute < now - SILENT_AFTER:
            state = "silent"
        result.append(
            InstanceRead(
                instance=row.instance,
                host=row.host,
                version=row.version,
                started_at=row.started_at,
                last_seen=row.minute,
                state=state,
                checks=checks,
            )
        )
    return result


async def traffic(session: AsyncSession, *, since: datetime) -> list[MinuteRead]:
    """Per minute since ``since``, summed over instances (p95: the slowest instance)."""
    rows = await session.execute(
        select(
            InstanceSample.minute,
            func.sum(InstanceSample.requests),
            func.sum(InstanceSample.errors),
            func.max(InstanceSample.p95_ms),
            func.sum(InstanceSample.websockets),
            func.count(),
        )
        .where(InstanceSample.minute >= since)
        .group_by(InstanceSample.minute)
        .order_by(InstanceSample.minute)
    )
    return [
        MinuteRead(
            at=minute,
            requests=int(requests or 0),
            errors=int(errors or 0),
            p95_ms=None if p95 is None else round(float(p95), 1),
            websockets=int(websockets or 0),
            instances=int(count),
        )
        for minute, requests, errors, p95, websockets, count in rows.all()
    ]


def _hour_of(session: AsyncSession) -> Any:
    """SQL for the hour a message was created in, as text ``YYYY-MM-DD HH`` (UTC)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.substr(Message.created_at, 1, 13)  # stored as ISO text
    return func.date_format(Message.created_at, "%Y-%m-%d %H")


async def messages_per_hour(session: AsyncSession, *, now: datetime) -> list[HourRead]:
    """Messages stored in each of the last 168 hours (the current one included)."""
    last = now.replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(hours=ACTIVITY_DAYS * 24 - 1)
    hour = _hour_of(session).label("hour")
    rows = await session.execute(
        select(hour, func.count()).where(Message.created_at >= first).group_by(hour)
    )
    counts = {
        datetime.strptime(str(text), "%Y-%m-%d %H").replace(tzinfo=UTC): int(count)
        for text, count in rows.all()
    }
    return [
        HourRead(at=at, messages=counts.get(at, 0))
        for at in (first + timedelta(hours=i) for i in range(ACTIVITY_DAYS * 24))
    ]


async def days(session: AsyncSession, *, now: datetime, utc_offset_minutes: int) -> list[DayRead]:
    """Messages and distinct senders on each of the last 7 days of the viewer's calendar."""
    offset = timedelta(minutes=utc_offset_minutes)
    local_midnight = (now + offset).replace(hour=0, minute=0, second=0, microsecond=0)
    result = []
    for back in range(ACTIVITY_DAYS - 1, -1, -1):
        start = local_midnight - timedelta(days=back) - offset
        end = start + timedelta(days=1)
        # One range scan of the (created_at, author_id) index per day.
        count, senders = (
            await session.execute(
                select(func.count(), func.count(func.distinct(Message.author_id))).where(
                    Message.created_at >= start, Message.created_at < end
                )
            )
        ).one()
        result.append(DayRead(day=start, messages=int(count), active_users=int(senders)))
    return result
