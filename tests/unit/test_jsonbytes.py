"""orjson writes what pydantic's JSON mode and the standard encoder wrote before it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from pydantic import BaseModel

from cmschat import jsonbytes
from cmschat.realtime import protocol


class Sample(BaseModel):
    """Values whose JSON differs most easily between encoders."""

    at: datetime
    whole_second: datetime
    text: str
    nothing: None
    flags: list[bool]


def test_the_bytes_equal_pydantics_json_mode() -> None:
    sample = Sample(
        at=datetime(2026, 12, 1, 3, 4, 5, 123456, tzinfo=UTC),
        whole_second=datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC),
        text='한국어 😀 "q" \\ \u2028 <b> \x00 \x7f',
        nothing=None,
        flags=[True, False],
    )
    assert jsonbytes.dumps(sample.model_dump()) == sample.model_dump_json().encode()


def test_a_datetime_in_another_zone_keeps_its_offset_like_pydantic() -> None:
    seoul = Sample(
        at=datetime(2026, 12, 1, 12, 0, tzinfo=timezone(timedelta(hours=9))),
        whole_second=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        text="",
        nothing=None,
        flags=[],
    )
    assert jsonbytes.dumps(seoul.model_dump()) == seoul.model_dump_json().encode()


def test_frames_are_the_standard_encoders_compact_text() -> None:
    frame = {"type": "message.created", "room_id": 3, "seq": 9, "payload": {"t": "안녕 😀"}}
    assert protocol.dumps(frame) == json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    assert jsonbytes.dumps({1: "a"}) == b'{"1":"a"}'  # int keys become strings, as before
