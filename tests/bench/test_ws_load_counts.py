"""bench/ws_load.py's counts: a send refused as ``busy`` is neither lost nor expected; a
stored one nobody heard of is lost."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cmschat.realtime import protocol
from cmschat.websocket import refusals

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def ws_load(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The bench module, imported as the bench runs it (its directory on the path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "ws_load", raising=False)
    import ws_load

    return ws_load


def answer(ws_load: Any, stats: Any, raw: str) -> None:
    ws_load.on_answer(stats, json.loads(raw), raw)


def test_a_refused_send_is_reported_apart_and_only_a_stored_one_can_lose(
    ws_load: Any,
) -> None:
    """Three sends to a room of 3: one acknowledged and delivered to all, one refused
    ``busy`` (the server's own frame), one acknowledged but delivered to two only."""
    stats = ws_load.Stats()
    keys = [ws_load.key_of(7, n) for n in (1, 2, 3)]
    for key in keys:
        stats.messages[key] = (0, True)
    answer(ws_load, stats, json.dumps({"type": "ack", "client_id": "b7-1"}))
    answer(ws_load, stats, refusals.busy("Busy.", 1).frame("b7-2"))
    answer(ws_load, stats, json.dumps({"type": "ack", "client_id": "b7-3"}))
    answer(ws_load, stats, protocol.error_frame("invalid", "Bad frame."))
    stats.receivers.update({keys[0]: 3, keys[2]: 2})

    got = ws_load.outcome(stats, 3, [2])

    assert got == {
        "expected_deliveries_total": 6,
        "lost": 1,
        "refused_busy": 1,
        "refused_would_be_deliveries": 3,
        "stored_unheard": 0,
        "unacked": 0,
    }
    assert stats.send_errors == 2 and len(stats.error_samples) == 1  # the refusal: no sample


def test_a_stored_message_whose_ack_and_deliveries_were_all_lost_counts_as_lost(
    ws_load: Any,
) -> None:
    """Rooms of 2: room 0 stored both its sends (its seq went up by 2) but only one was
    heard of; room 1 stored nothing of its unanswered send (a send lost on the way in)."""
    stats = ws_load.Stats()
    heard, unheard, never = ws_load.key_of(1, 1), ws_load.key_of(1, 2), ws_load.key_of(2, 1)
    stats.messages.update({heard: (0, True), unheard: (0, True), never: (1, True)})
    answer(ws_load, stats, json.dumps({"type": "ack", "client_id": "b1-1"}))
    stats.receivers[heard] = 2

    got = ws_load.outcome(stats, 2, [2, 0])

    assert got["stored_unheard"] == 1
    assert got["lost"] == 2  # both deliveries of the stored message nobody heard of
    assert got["unacked"] == 2


def test_without_the_rooms_count_the_unheard_are_unknown_not_zero(ws_load: Any) -> None:
    """The server gone by the end: its rooms' count cannot be read, so the report says
    ``stored_unheard`` is unknown and counts only what was heard as lost."""
    stats = ws_load.Stats()
    heard, unanswered = ws_load.key_of(1, 1), ws_load.key_of(1, 2)
    stats.messages.update({heard: (0, True), unanswered: (0, True)})
    answer(ws_load, stats, json.dumps({"type": "ack", "client_id": "b1-1"}))
    stats.receivers[heard] = 1

    got = ws_load.outcome(stats, 2, None)

    assert got["stored_unheard"] is None
    assert got["lost"] == 1 and got["unacked"] == 1
