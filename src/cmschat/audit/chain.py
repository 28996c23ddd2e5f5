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
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
# ``JSONEncoder.encode`` builds its C encoder (with a dict of markers and a closure) on
# every call, which cost as much as encoding an event: the same C encoder, with the same
# options, made once. No circular check (markers None): a value with a cycle fails with
# RecursionError rather than ValueError; any other value is written the same, byte for byte
# (tests/audit/test_canonical_json.py).
_C_CANONICAL = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, _CANONICAL.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )
)


def canonical_json(value: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept as is."""
    if _C_CANONICAL is None:  # pragma: no cover - a Python without the C accelerator
        return _CANONICAL.encode(value)
    return "".join(_C_CANONICAL(value, 0))


_last_time: tuple[datetime, str] | None = None
"""The last ``_time``: the events of one commit (a send batch's 64) share their time."""


def _time(value: datetime) -> str:
    global _last_time
    last = _last_time
    if last is not None and last[0] is value:
        return last[1]
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _last_time = (value, text)
    return text


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


_BODY_ORDER = tuple(sorted(HASHED_FIELDS))
_BODY_TEMPLATE = "{" + ",".join(f'"{name}":%s' for name in _BODY_ORDER) + "}"
"""The canonical JSON of a hashed body, its values left to fill in (keys sorted, as
``canonical_json`` writes them)."""
_ENCODE_STRING = json.encoder.encode_basestring


def _body_json(event: Mapping[str, Any], occurred_at: str) -> str:
    """``canonical_json`` of an event's hashed fields (``occurred_at`` as text). Values that
    are exactly ``str``, ``int`` or None, as every event's are, are written straight into
    the template as the encoder writes them (its own string function, ``int``'s repr):
    the same text, for a third of the encoder's cost (tests/audit/test_canonical_json.py)."""
    values = []
    for name in _BODY_ORDER:
        value = occurred_at if name == "occurred_at" else event[name]
        kind = type(value)
        if kind is str:
            values.append(_ENCODE_STRING(value))
        elif kind is int:
            values.append(int.__repr__(value))
        elif value is None:
            values.append("null")
        else:  # a float, a bool, a subclass: the encoder decides
            body = {name: event[name] for name in HASHED_FIELDS}
            body["occurred_at"] = occurred_at
            return canonical_json(body)
    return _BODY_TEMPLATE % tuple(values)


def event_hash(event: Mapping[str, Any]) -> str:
    """The hash an event must carry, given its fields and ``prev_hash``."""
    body = _body_json(event, _time(event["occurred_at"]))
    return hashlib.sha256((event["prev_hash"] + body).encode()).hexdigest()


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
