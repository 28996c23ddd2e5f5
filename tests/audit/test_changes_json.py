"""An audit event's changes are written as canonical JSON once, when recorded: plain ones
(every send's) without a JSON round trip, and the chain still verifies."""

from __future__ import annotations

import enum
import json
from datetime import UTC, date, datetime
from typing import Any
from unittest import mock

import pytest

from cmschat.audit import chain, fields
from cmschat.audit import service as audit
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from tests.support import audit_events


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


PLAIN: list[dict[str, Any]] = [
    {},
    {"room_id": 7, "content": "sha256:ab", "attachment_ids": [3, 1, 2]},
    {"b": None, "a": True, "c": False, "d": -(2**63), "é": "ünï 中文 😀", "ctl": "\x00\x1f\x7f\n"},
    {"names": ["x", None, True, 2], "empty": []},
]
OTHER: list[dict[str, Any]] = [
    {"at": datetime(2026, 1, 1, tzinfo=UTC), "on": date(2026, 1, 2)},
    {"ids": (3, 1), "set": {"b", "a"}, "colour": Colour.RED},
    {"level": Level.HIGH, "levels": [Level.HIGH]},
    {10: "ten", 2: "two"},
    {"nested": {"b": 1, "a": [1, (2, 3)]}},
    {"ratio": 0.1, "big": 1e16},
]


def round_trip(details: dict[str, Any]) -> str:
    """What the trail wrote before: the changes through JSON and back, then canonical."""
    return chain.canonical_json(json.loads(json.dumps(details, default=fields._jsonable)))


@pytest.mark.parametrize("details", PLAIN + OTHER)
def test_changes_are_written_as_the_round_trip_wrote_them(details: dict[str, Any]) -> None:
    assert fields._changes_json(details) == round_trip(details)


async def test_plain_changes_skip_the_round_trip_and_the_chain_verifies(
    context: AppContext,
) -> None:
    loads = mock.Mock(wraps=json.loads)
    with mock.patch.object(json, "loads", loads):
        async with context.db.unit_of_work(SYSTEM_CLI) as session:
            for n, details in enumerate(PLAIN):
                audit.record(
                    session, action="test.plain", target_type="t", target_id=n, changes=details
                )
        assert loads.call_count == 0
        async with context.db.unit_of_work(SYSTEM_CLI) as session:
            for n, details in enumerate(OTHER):
                audit.record(
                    session, action="test.other", target_type="t", target_id=n, changes=details
                )
        assert loads.call_count == len(OTHER)
    stored = await audit_events(context.db)
    written = [event.changes for event in stored if event.action.startswith("test.")]
    assert written == [round_trip(details) for details in PLAIN + OTHER]
    async with context.db.unit_of_work(SYSTEM_CLI, read_only=True) as session:
        verdict = await chain.verify(session)
    assert verdict.ok, verdict.describe()
