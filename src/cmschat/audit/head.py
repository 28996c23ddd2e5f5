"""Exporting the chain head, so a copy of it can be kept outside the database.

Whoever can rewrite the database can rebuild a consistent chain; a head recorded elsewhere
(Prometheus, the central logs) is what exposes that. The metrics give the head's id and
the first 13 hex digits of its hash as a number (exact in a float64), which Prometheus
stores without a new series per event; the log line gives the full hash.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from cmschat.audit.models import AuditHead
from cmschat.db.actors import SYSTEM_AUDIT

if TYPE_CHECKING:  # the database layer imports this module to hook the commit
    from cmschat.db.session import Database

log = logging.getLogger(__name__)

HASH_PREFIX_DIGITS = 13

# Several workers: the value the last of them set (the newest head), not one series per pid.
HEAD_ID = Gauge(
    "cmschat_audit_head_id",
    "Id of the newest audit event this instance has seen",
    multiprocess_mode="mostrecent",
)
HEAD_HASH_PREFIX = Gauge(
    "cmschat_audit_head_hash_prefix",
    "First 13 hex digits of the newest audit event's hash, as an integer",
    multiprocess_mode="mostrecent",
)

_last_logged: tuple[int, str] | None = None
_current: tuple[int, str] | None = None


def hash_prefix(value: str) -> int:
    """The metric form of a hash."""
    return int(value[:HASH_PREFIX_DIGITS], 16)


def advanced(head_id: int, head_hash: str, *, read_from_database: bool = False) -> None:
    """Note a new head: after a commit that appended events, or as read from the database."""
    global _current
    if _current is not None and head_id <= _current[0] and not read_from_database:
        return  # commits of this process finishing out of order
    _current = (head_id, head_hash)
    HEAD_ID.set(head_id)
    HEAD_HASH_PREFIX.set(hash_prefix(head_hash))


def log_head(*, force: bool = False) -> None:
    """Write the head to the log if it moved since the last time (or always, with force)."""
    global _last_logged
    if _current is None or (_current == _last_logged and not force):
        return
    _last_logged = _current
    log.info(
        "audit head %d %s",
        *_current,
        extra={
            "event.action": "audit.head",
            "audit.head.id": _current[0],
            "audit.head.hash": _current[1],
        },
    )


async def refresh(db: Database) -> None:
    """Read the head from the database: at start-up, and now and then for other instances'."""
    async with db.unit_of_work(SYSTEM_AUDIT) as session:
        row = await session.get(AuditHead, 1)
    if row is not None:
        advanced(row.last_id, row.last_hash, read_from_database=True)
