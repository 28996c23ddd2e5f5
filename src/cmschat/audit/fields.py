"""What an audit event says: who asked for the change and from which request (``Origin``),
and its details as the canonical JSON the chain hashes."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cmschat.audit.chain import canonical_json
from cmschat.observability.logging import (
    client_address_var,
    client_request_id_var,
    request_id_var,
)


@dataclass(frozen=True)
class Origin:
    """Who asked for a change, and from which request: captured in the request's task,
    for a change written later by another (the group commit of sends)."""

    actor: str
    actor_name: str | None
    request_id: str | None
    client_address: str | None
    client_request_id: str | None


def origin_of(actor: str, actor_name: str | None) -> Origin:
    """The caller's actor and this task's request context, captured now."""
    return Origin(
        actor=actor,
        actor_name=actor_name,
        request_id=request_id_var.get(),
        client_address=client_address_var.get(),
        client_request_id=client_request_id_var.get(),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"cannot put {type(value).__name__} in an audit event")


_SCALARS = frozenset({str, int, bool, type(None)})
"""Types a JSON round trip gives back unchanged (exactly these: no subclasses, no floats)."""


def _changes_json(details: dict[str, Any]) -> str:
    """The canonical JSON of ``details`` as they read back from JSON (tuples, sets, enums,
    dates and non-string keys normalised). A flat dict of strings, integers, booleans and
    None (or lists of them), as most events carry, comes back from that round trip as it
    was, so it is written once without it."""
    for key, value in details.items():
        kind = type(value)
        if type(key) is not str or not (
            kind in _SCALARS or (kind is list and all(type(item) in _SCALARS for item in value))
        ):
            return canonical_json(json.loads(json.dumps(details, default=_jsonable)))
    return canonical_json(details)


def text_digest(text: str) -> str:
    """How a message body appears in the trail: its SHA-256, never the text."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{field: [before, after]}`` for the fields whose value differs."""
    return {
        key: [before.get(key), value] for key, value in after.items() if before.get(key) != value
    }
