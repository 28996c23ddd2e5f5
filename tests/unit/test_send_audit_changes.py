"""A send's audit event carries the changes ``canonical_json`` would write, written into a
template (``batch_audit.changes_json``): the same events, so the same hashes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmschat.audit import service as audit
from cmschat.audit.fields import _changes_json
from cmschat.chat.messages import batch_audit


def changes(room_id: Any, content: str, file_ids: list[Any]) -> dict[str, Any]:
    return {"room_id": room_id, "content": audit.text_digest(content), "attachment_ids": file_ids}


SENDS = [
    changes(1, "", []),
    changes(7, "hello @admin 5", [3]),
    changes(2**40, '회의를 😀 "q" \\ \x00', [9, 1, 2**62]),
]


@pytest.mark.parametrize("sent", SENDS)
def test_a_sends_changes_are_written_as_the_encoder_writes_them(sent: dict[str, Any]) -> None:
    assert batch_audit.changes_json(sent) == _changes_json(sent)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1), st.text(), st.lists(st.integers(min_value=1)))
def test_any_sends_changes(room_id: int, content: str, file_ids: list[int]) -> None:
    sent = changes(room_id, content, file_ids)
    assert batch_audit.changes_json(sent) == _changes_json(sent)


@pytest.mark.parametrize(
    "sent",
    [changes(True, "x", []), changes(1, "x", [True]), changes(1, "x", ["3"])],
)
def test_other_values_are_left_to_the_encoder(sent: dict[str, Any]) -> None:
    assert batch_audit.changes_json(sent) is None


class Session:
    sync_session = type("SyncSession", (), {"info": {}})()


@pytest.mark.parametrize("client_request_id", [None, "", "web-42"])
def test_an_event_with_the_written_changes_is_the_event_without(
    client_request_id: str | None,
) -> None:
    origin = audit.Origin("user:7", "alice", "req-1", "127.0.0.1", client_request_id)
    now = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    sent = changes(5, "hello", [1, 2])

    def fields(written: str | None) -> dict[str, Any]:
        return audit.event_fields(
            Session,  # type: ignore[arg-type]
            action="message.created",
            target_type="message",
            changes=sent,
            origin=origin,
            now=now,
            changes_json=written,
        )

    assert fields(batch_audit.changes_json(sent)) == fields(None)
