"""Audit events past their own retention expire, batch by batch, through the one permitted path.

The trail is append-only (migration 0005): the only deletion allowed goes through the
expiry permit (SQLite) or the ``cmschat_expire_audit_events`` procedure (MariaDB). Each
batch leaves an ``audit.expired`` checkpoint event from which ``audit verify`` proves the
rest of the chain.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.audit import service as audit
from cmschat.audit.chain import EXPIRED_ACTION
from cmschat.audit.models import AuditEvent
from cmschat.db.session import Database

BATCH = 5000


async def expire_events(*, db: Database, cutoff: datetime, actor: str, batch: int = BATCH) -> int:
    """Remove audit events older than ``cutoff``, ``batch`` per transaction; how many."""
    expired = 0
    while True:
        async with db.unit_of_work(actor) as session:
            rows = (
                await session.execute(
                    select(AuditEvent.id, AuditEvent.hash, AuditEvent.occurred_at)
                    .order_by(AuditEvent.id)
                    .limit(batch)
                )
            ).all()
            old = []
            for row in rows:
                if row.occurred_at >= cutoff:
                    break
                old.append(row)
            if not old:
                return expired
            through_id, through_hash = old[-1].id, old[-1].hash
            await _expire_through(session, through_id)
            # In the same transaction: the chain is never without its new starting point.
            audit.record(
                session,
                action=EXPIRED_ACTION,
                target_type="audit",
                changes={
                    "through_id": through_id,
                    "through_hash": through_hash,
                    "count": len(old),
                    "cutoff": cutoff,
                },
            )
        expired += len(old)
        if len(old) < batch:
            return expired


async def _expire_through(session: AsyncSession, through_id: int) -> None:
    """The one permitted deletion of audit events (see migration 0005)."""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("INSERT INTO audit_expiry_permit (id) VALUES (1)"))
        await session.execute(delete(AuditEvent).where(AuditEvent.id <= through_id))
        await session.execute(text("DELETE FROM audit_expiry_permit"))
    else:
        await session.execute(
            text("CALL cmschat_expire_audit_events(:through_id)"), {"through_id": through_id}
        )
