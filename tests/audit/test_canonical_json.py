"""The chain's canonical JSON and event hashes, built without a new encoder per call: the
same text and the same hashes as ``json.dumps`` with the chain's options."""

from __future__ import annotations

import enum
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmschat.audit import chain


class Level(enum.IntEnum):
    HIGH = 3


def reference(value: Any) -> str:
    """What the chain wrote before (``json.dumps`` builds its encoder per call)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def reference_hash(event: dict[str, Any]) -> str:
    body = {name: event[name] for name in chain.HASHED_FIELDS}
    body["occurred_at"] = event["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return hashlib.sha256((event["prev_hash"] + reference(body)).encode()).hexdigest()


TEXTS = [
    "",
    "plain",
    '"quoted" \\ back\\slash /',
    "\x00\x01\x1f\x7f\n\r\t\b\f",
    "회의를 회의에서 中文 日本語",
    "😀👍🏽👨‍👩‍👧 \u200d \ufeff \u2028\u2029",
    "\ud800 lone surrogate",
    "sha256:" + "ab" * 32,
    '{"attachment_ids":[],"content":"sha256:00","room_id":1}',
]
VALUES: list[Any] = [
    *TEXTS,
    None,
    True,
    False,
    0,
    -(2**63),
    2**70,
    0.1,
    1e16,
    float("nan"),
    float("inf"),
    Level.HIGH,
    [1, "a", None, [True, {}]],
    {"b": 1, "a": {"d": [1, 2], "c": "é"}},
    {"z": TEXTS, "y": None},
]


@pytest.mark.parametrize("value", VALUES)
def test_canonical_json_writes_what_json_dumps_writes(value: Any) -> None:
    assert chain.canonical_json(value) == reference(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_json_of_any_value(value: Any) -> None:
    assert chain.canonical_json(value) == reference(value)


def test_canonical_json_does_not_build_an_encoder_per_call() -> None:
    with mock.patch.object(
        json.JSONEncoder, "iterencode", side_effect=AssertionError("an encoder per call")
    ):
        assert chain.canonical_json({"b": 1, "a": "x"}) == '{"a":"x","b":1}'


AT = datetime(2026, 12, 1, 20, 0, 0, 123456, tzinfo=UTC)


def event(**fields: Any) -> dict[str, Any]:
    return {
        "id": 41,
        "occurred_at": AT,
        "actor": "user:7",
        "actor_id": 7,
        "actor_name": "alice",
        "action": "message.created",
        "target_type": "message",
        "target_id": "1234",
        "request_id": "req-1",
        "client_address": "127.0.0.1",
        "changes": '{"attachment_ids":[],"content":"sha256:00","room_id":1}',
        "prev_hash": "0" * 64,
        **fields,
    }


EVENTS = [
    event(),
    event(actor_id=None, target_id=None, request_id=None, client_address=None),
    # (A lone surrogate cannot be hashed, UTF-8 has no spelling for it: before as now.)
    *(
        event(actor_name=text, changes=text, target_id=text)
        for text in TEXTS
        if "\ud800" not in text
    ),
    event(id=2**63 - 1, occurred_at=AT.astimezone(timezone(timedelta(hours=9)))),
    # Values no event carries: the encoder decides, as before.
    event(actor_id=True),
    event(actor_id=Level.HIGH),
    event(target_id=1.5),
    event(changes={"b": 1, "a": [None]}),
]


@pytest.mark.parametrize("fields", EVENTS)
def test_event_hash_is_the_hash_of_the_canonical_body(fields: dict[str, Any]) -> None:
    assert chain.event_hash(fields) == reference_hash(fields)


def test_an_event_of_strings_ints_and_nones_is_hashed_without_the_encoder() -> None:
    with mock.patch.object(chain, "canonical_json", side_effect=AssertionError("encoded")):
        assert chain.event_hash(event()) == reference_hash(event())


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([name for name in chain.HASHED_FIELDS if name != "occurred_at"]),
        st.none() | st.integers() | st.text() | st.booleans(),
    ),
    st.datetimes(timezones=st.just(UTC)),
)
def test_event_hash_of_any_fields(fields: dict[str, Any], at: datetime) -> None:
    fields = event(occurred_at=at, **fields)
    assert chain.event_hash(fields) == reference_hash(fields)


def test_events_one_after_another_each_get_their_own_time() -> None:
    later = AT + timedelta(microseconds=1)
    for at in (AT, AT, later, AT, AT.replace(microsecond=0), later):
        assert chain.event_hash(event(occurred_at=at)) == reference_hash(event(occurred_at=at))
