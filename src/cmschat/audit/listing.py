"""Finding audit events for the console: filters, pages newest first, and CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.audit.chain import HASHED_FIELDS
from cmschat.audit.models import AuditEvent
from cmschat.db.batches import in_id_order
from cmschat.pagination import decode_cursor, encode_cursor

MAX_PAGE = 500
CURSOR_TAG = "a"
EXPORT_BATCH = 1000
CSV_COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
"""Every field of an event, in the order the chain hashes them."""
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Filters:
    """What to look for; every field optional."""

    actor: str | None = None
    """Username (as it was then) or system job name."""
    actor_id: int | None = None
    action: str | None = None
    """An exact action, or a prefix ending in ``*`` (``message.*``)."""
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    """Exclusive upper bound."""


def _filtered(filters: Filters) -> Select[AuditEvent]:
    statement = select(AuditEvent)
    if filters.actor is not None:
        statement = statement.where(AuditEvent.actor_name == filters.actor)
    if filters.actor_id is not None:
        statement = statement.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action is not None:
        if filters.action.endswith("*"):
            prefix = filters.action[:-1].replace("\\", "\\\\").replace("%", "\\%")
            statement = statement.where(
                AuditEvent.action.like(prefix.replace("_", "\\_") + "%", escape="\\")
            )
        else:
            statement = statement.where(AuditEvent.action == filters.action)
    if filters.target_type is not None:
        statement = statement.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id is not None:
        statement = statement.where(AuditEvent.target_id == filters.target_id)
    if filters.since is not None:
        statement = statement.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEvent.occurred_at < filters.until)
    return statement


async def list_events(
    session: AsyncSession, *, filters: Filters, cursor: str | None = None, limit: int = 100
) -> tuple[list[AuditEvent], str | None]:
    """One page of matching events, newest first."""
    limit = max(1, min(limit, MAX_PAGE))
    statement = _filtered(filters).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if cursor:
        statement = statement.where(AuditEvent.id < decode_cursor(CURSOR_TAG, cursor))
    rows = list((await session.scalars(statement)).all())
    more = len(rows) > limit
    return rows[:limit], encode_cursor(CURSOR_TAG, rows[limit - 1].id) if more else None


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_line(values: list[object]) -> str:
    """One CSV record, every cell made safe to open in a spreadsheet."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_cell(v) for v in values])
    return buffer.getvalue()


async def export_csv(session: AsyncSession, *, filters: Filters) -> AsyncIterator[str]:
    """Every matching event as CSV, oldest first, read in batches."""
    yield csv_line(list(CSV_COLUMNS))
    async for rows in in_id_order(session, _filtered(filters), AuditEvent.id, size=EXPORT_BATCH):
        for row in rows:
            values: list[object] = [getattr(row, column) for column in CSV_COLUMNS]
            values[1] = row.occurred_at.isoformat()
            yield csv_line(values)
