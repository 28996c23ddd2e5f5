"""The hand-written ``message.send`` parser never disagrees with the pydantic model.

Whatever a client sends, the frame's outcome (the send the service is asked for, or the
error frame the client reads) is the one the model gives: the fast parser takes only
frames the model accepts, with the same values, and leaves everything else to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cmschat.context import AppContext
from cmschat.realtime.connections import Connection
from cmschat.websocket import actions, fast_send, frames
from cmschat.websocket.caller import Caller

MAX_ID = 2**63 - 1
FIELDS = ("type", "room_id", "content", "client_id", "reply_to", "attachment_ids")
VALID: dict[str, Any] = {
    "type": "message.send",
    "room_id": 7,
    "content": "hello",
    "client_id": "c-1",
    "reply_to": 3,
    "attachment_ids": [1, 2],
}

# Values of every JSON type, each field's boundaries, and the coercions the model allows.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    MAX_ID,
    MAX_ID + 1,
    2**64,
    -(2**63),
    1.0,
    1.5,
    1e300,
    "",
    "1",
    "x" * 64,
    "x" * 65,
    "a b",
    "é",
    "\U0001f600",
    "٣",
    "c-1\n",
    "x" * 100_000,
    "x" * 100_001,
    "한" * 100_000,
    "\U0001f600" * 100_001,
    [],
    [1],
    [0],
    [True],
    [1.0],
    ["1"],
    list(range(1, 11)),
    list(range(1, 12)),
    [[1]],
    {},
    {"a": 1},
    {"type": "message.send", "room_id": 1},
    "message.send",
    "ping",
    "typing",
    "read",
    "auth",
]


def corpus() -> list[str]:
    """Valid sends, then every field missing, of each odd value, extra or doubled, and text
    that is not a frame at all."""
    texts = [json.dumps(VALID), json.dumps({"type": "message.send", "room_id": 1})]
    for field in FIELDS:
        texts.append(json.dumps({k: v for k, v in VALID.items() if k != field}))
        for value in ODD_VALUES:
            texts.append(json.dumps(VALID | {field: value}))
            texts.append(json.dumps({"type": "message.send", "room_id": 1, field: value}))
    for extra in ("extra", "Room_id", "room_id ", "message_id", ""):
        texts.append(json.dumps(VALID | {extra: 1}))
    texts += [
        '{"type":"message.send","room_id":1,"room_id":"x"}',
        '{"type":"message.send","room_id":"x","room_id":1}',
        '{"type":"ping","type":"message.send","room_id":1}',
        '{"type":"message.send","type":"ping","room_id":1}',
        '{"type":"message.send","room_id":1,"content":"\\ud800"}',
        '{"type":"message.send","room_id":1,"content":"\\ud83d\\ude00 \\u0000 \\n"}',
        '{"type":"message.send","room_id":1,"content":"a\x00b"}',
        '{"type":"message.send","room_id":01}',
        '{"type":"message.send","room_id":1e0}',
        '{"type":"message.send","room_id":1E400}',
        '{"type":"message.send","room_id":-0}',
        '{"type":"message.send","room_id":NaN}',
        '{"type":"message.send","room_id":Infinity}',
        '{"type":"message.send","room_id":1,}',
        '{"type":"message.send","room_id":1}x',
        '{"type":"message.send","room_id":1}{}',
        '\ufeff{"type":"message.send","room_id":1}',
        ' \t\r\n{"type" : "message.send" , "room_id" : 1}\n ',
        '\u00a0{"type":"message.send","room_id":1}',
        '{"type":"message.send","room_id":1,"attachment_ids":[1,[2]]}',
        '{"type":"message.send","room_id":1,"content":' + "[" * 8 + "]" * 8 + "}",
        '{"type":"message.send","room_id":1,"client_id":"' + "é" * 64 + '"}',
        '{"type":"message.send","room_id":1,"client_id":"abc\\u0000"}',
        '{"type":"message.send","room_id":' + "9" * 5000 + "}",
        '["message.send", 1]',
        '"message.send"',
        "null",
        "1",
        "",
        "{",
        "{}",
        '{"type":"ping"}',
        '{"type":"typing","room_id":1}',
        '{"type":"read","room_id":1,"message_id":2}',
        '{"type":"auth","token":"t"}',
    ]
    return texts


def _model(text: str) -> frames.SendFrame | None:
    """The model's send for this text, or None when it refuses it or it is another frame."""
    try:
        frame = frames.ACTION.validate_json(text)
    except ValidationError:
        return None
    return frame if isinstance(frame, frames.SendFrame) else None


def _agrees(text: str) -> bool:
    fast = fast_send.parse_send(text)
    if fast is None:
        return True
    model = _model(text)
    assert model is not None, f"fast parser took what the model refuses: {text[:200]!r}"
    for field in fast_send.SendDraft._fields:
        got, want = getattr(fast, field), getattr(model, field)
        assert (got, type(got)) == (want, type(want)), (field, text[:200])
    return True


CORPUS = corpus()


@pytest.mark.parametrize("text", CORPUS, ids=[f"frame{n}" for n in range(len(CORPUS))])
def test_fast_parser_takes_only_what_the_model_accepts_with_its_values(text: str) -> None:
    assert _agrees(text)


def test_fast_parser_takes_the_sends_clients_really_send() -> None:
    """Plainly valid sends never reach the model (else the fast path saves nothing)."""
    sends = [
        VALID,
        {"type": "message.send", "room_id": 1, "content": "hi", "client_id": "k:9.x_Y-2"},
        {"type": "message.send", "room_id": MAX_ID, "content": "안녕 \U0001f600" * 1000},
        {"type": "message.send", "room_id": 1, "client_id": None, "reply_to": None},
        {"type": "message.send", "room_id": 1, "attachment_ids": list(range(1, 11))},
    ]
    for send in sends:
        for text in (json.dumps(send), json.dumps(send, ensure_ascii=False, indent=1)):
            assert fast_send.parse_send(text) is not None, text[:80]
            assert _agrees(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, MAX_ID, MAX_ID + 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70)
    | st.from_regex(r"[A-Za-z0-9._:-]{0,66}", fullmatch=True),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
frame_dicts = st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=7).map(
    lambda d: d | {"type": "message.send"} if "type" not in d else d
)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(frame=frame_dicts, spaced=st.booleans())
def test_fast_parser_agrees_with_the_model_on_generated_frames(
    frame: dict[str, Any], spaced: bool
) -> None:
    text = json.dumps(frame, indent=1 if spaced else None, ensure_ascii=spaced)
    assert _agrees(text)


class _RecordingActions(actions.FrameActions):
    """The frame actions with the services replaced by a record of what was asked."""

    def __init__(self, asked: list[Any], replies: list[str]) -> None:
        async def send(**call: Any) -> tuple[Any, bool]:
            draft = call["draft"]
            asked.append(("send", call["room_id"], *(getattr(draft, f) for f in FIELDS[2:])))
            return SimpleNamespace(json=b'{"id":1,"content":"stored"}'), True

        @asynccontextmanager
        async def admitted(transport: str) -> AsyncIterator[None]:
            yield

        context = SimpleNamespace(
            sends=SimpleNamespace(send=send), admission=SimpleNamespace(sends=admitted)
        )
        caller = Caller(id=1, username="alice", display_name="Alice", role=cast(Any, "user"))
        super().__init__(
            cast(AppContext, context), caller, Connection(user_id=1, queue_size=10), replies.append
        )
        self._sender = cast(Any, object())
        self._still_wanted = lambda: True
        self.asked = asked

    async def _note_activity(self) -> None:
        return None

    async def _mark_read(self, frame: frames.ReadFrame) -> None:
        self.asked.append(("read", frame.room_id, frame.message_id))

    async def _typing(self, frame: frames.TypingFrame) -> None:
        self.asked.append(("typing", frame.room_id))


async def _outcome(text: str) -> tuple[list[Any], list[str]]:
    asked: list[Any] = []
    replies: list[str] = []
    await _RecordingActions(asked, replies).handle(text)
    return asked, replies


async def test_a_frame_does_and_answers_the_same_with_or_without_the_fast_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The send asked of the service, the ack and every error frame are the same as when
    each frame goes through the model."""
    texts = CORPUS
    fast = [await _outcome(text) for text in texts]
    monkeypatch.setattr(actions, "parse_send", lambda text: None)
    through_model = [await _outcome(text) for text in texts]
    for text, got, want in zip(texts, fast, through_model, strict=True):
        assert got == want, text[:200]
    acks = [replies[0] for _, replies in fast if replies and '"ack"' in replies[0]]
    assert acks[0] == '{"type":"ack","client_id":"c-1","message":{"id":1,"content":"stored"}}'
    assert any(not replies or "invalid" in replies[0] for _, replies in fast)
