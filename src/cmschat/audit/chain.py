"""The hash chain: how an event's hash is computed, and walking the chain to prove it whole.

``hash = SHA-256(prev_hash || canonical JSON of the event)``. Editing a row changes its
hash; deleting, inserting or reordering rows breaks the next row's ``prev_hash`` link; a
row cut off the end no longer matches the head. Expiring old events leaves a checkpoint
(an ``audit.expired`` event naming the last removed event's id and hash) from which the
rest of the chain still verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.audit.models import GENESIS_HASH, AuditEvent, AuditHead
from cmschat.db.batches import in_id_order
from cmschat.errors import Invalid
from cmschat.observability import instruments

EXPIRED_ACTION = "audit.expired"
VERIFY_BATCH = 2000


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""``json.dumps`` with these options builds this very encoder on every call: made once."""


def canonical_json(value: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept as is."""
    return _CANONICAL.encode(value)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


HASHED_FIELDS = (
    "id",
    "occurred_at",
    "actor",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "request_id",
    "client_address",
    "changes",
)


def event_hash(event: Mapping[str, Any]) -> str:
    """The hash an event must carry, given its fields and ``prev_hash``."""
    body = {name: event[name] for name in HASHED_FIELDS}
    body["occurred_at"] = _time(event["occurred_at"])
    return hashlib.sha256((event["prev_hash"] + canonical_json(body)).encode()).hexdigest()


def fields_of(row: AuditEvent) -> dict[str, Any]:
    """A stored event's fields, as ``event_hash`` takes them."""
    return {name: getattr(row, name) for name in (*HASHED_FIELDS, "prev_hash")}


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found."""

    ok: bool
    checked: int
    """Events checked."""
    head_id: int
    head_hash: str
    first_bad_id: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        """One line for people."""
        if self.ok:
            return (
                f"audit chain intact: {self.checked} events, head {self.head_id} {self.head_hash}"
            )
        return f"audit chain broken at event {self.first_bad_id}: {self.problem}"


async def _checkpoint(session: AsyncSession) -> tuple[int, str]:
    """Where the kept chain starts: after the newest expiry checkpoint, or at the genesis."""
    changes = await session.scalar(
        select(AuditEvent.changes)
        .where(AuditEvent.action == EXPIRED_ACTION)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    if changes is None:
        return 0, GENESIS_HASH
    details = json.loads(changes)
    return int(details["through_id"]), str(details["through_hash"])


async def verify(session: AsyncSession, *, last: int | None = None) -> Verdict:
    """Walk the chain in id order; stop at the first event that does not hold.

    ``last``: only the newest ``last`` events, trusting the one before them (a quick
    check for the dashboard; the full walk is ``cmschat audit verify``).
    """
    verdict = await _walk(session, last=last)
    instruments.audit_verified(ok=verdict.ok)
    return verdict


async def _walk(session: AsyncSession, *, last: int | None) -> Verdict:
    expected_id, expected_prev = await _checkpoint(session)
    head = await session.get(AuditHead, 1)
    if last is not None and head is not None and head.last_id - last > expected_id:
        start = await session.get(AuditEvent, head.last_id - last)
        if start is not None:
            expected_id, expected_prev = start.id, start.hash
    expected_id += 1
    checked = 0
    statement = select(AuditEvent).where(AuditEvent.id >= expected_id)
    async for rows in in_id_order(session, statement, AuditEvent.id, size=VERIFY_BATCH):
        for row in rows:
            if row.id != expected_id:
                bad = min(row.id, expected_id)
                return _broken(checked, bad, f"event {expected_id} is missing (next is {row.id})")
            if row.prev_hash != expected_prev:
                return _broken(
                    checked,
                    row.id,
                    "its prev_hash does not match the event before it "
                    "(an event was inserted, removed or moved)",
                )
            if event_hash(fields_of(row)) != row.hash:
                return _broken(checked, row.id, "its content was altered (hash mismatch)")
            checked += 1
            expected_id, expected_prev = row.id + 1, row.hash
    head = await session.get(AuditHead, 1, populate_existing=True)
    if head is None:
        return _broken(checked, expected_id, "the chain head row is missing")
    if (head.last_id, head.last_hash) != (expected_id - 1, expected_prev):
        return _broken(
            checked,
            expected_id,
            f"the head says the chain ends at event {head.last_id}, "
            f"but it ends at {expected_id - 1} (events were cut off the end)",
        )
    return Verdict(ok=True, checked=checked, head_id=head.last_id, head_hash=head.last_hash)


def parse_kept_head(kept: str) -> tuple[int, str]:
    """``ID:HASH`` as logged or printed by verify; Invalid for anything else."""
    head_id_text, _, head_hash = kept.strip().partition(":")
    head_hash = head_hash.lower()
    if (
        not head_id_text.isdigit()
        or len(head_hash) != len(GENESIS_HASH)
        or any(c not in "0123456789abcdef" for c in head_hash)
    ):
        raise Invalid("a kept head is written ID:HASH, e.g. 1042:9f86d08…", field="expect_head")
    return int(head_id_text), head_hash


async def check_kept_head(
    session: AsyncSession, kept: tuple[int, str], verdict: Verdict
) -> Verdict:
    """Check a head recorded elsewhere against an intact chain.

    An attacker who rewrites the database can build a new, self-consistent chain; the
    event a kept head names then no longer has the hash recorded for it.
    """
    head_id, head_hash = kept
    if head_id > verdict.head_id:
        return _broken(
            verdict.checked,
            head_id,
            f"the kept head is event {head_id}, past the chain's end at {verdict.head_id} "
            "(events were cut off the end)",
        )
    stored = await session.scalar(select(AuditEvent.hash).where(AuditEvent.id == head_id))
    if stored is None:
        # Expired since: the checkpoint proved the rest of the chain already.
        return verdict
    if stored != head_hash:
        return _broken(
            verdict.checked,
            head_id,
            "its hash differs from the kept head (the chain was rewritten)",
        )
    return verdict


def _broken(checked: int, event_id: int, problem: str) -> Verdict:
    return Verdict(
        ok=False,
        checked=checked,
        head_id=0,
        head_hash="",
        first_bad_id=event_id,
        problem=problem,
    )
