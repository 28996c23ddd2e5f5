"""Pre-serialised history pages and frames are byte for byte what the pydantic models and
FastAPI's encoder wrote before: tricky values included."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from cmschat import jsonbytes
from cmschat.chat.schemas import MessagePage
from cmschat.realtime import protocol

AUTHOR = {"id": 7, "username": "cho", "display_name": '조 "Cho" <b>&</b> \U0001f600'}
FILE = {
    "id": 3,
    "room_id": 1,
    "message_id": 11,
    "uploader_id": None,
    "filename": "a\u2028b\\c\t\x01.png",
    "size": 2**40,
    "content_type": "image/png",
    "sha256": "ab" * 32,
    "is_image": True,
}


def message(id_: int, **fields: Any) -> dict[str, Any]:
    """A message dict in MessageRead's field order."""
    base: dict[str, Any] = {
        "id": id_,
        "room_id": 1,
        "seq": id_,
        "author": AUTHOR,
        "content": "<script>alert('x')</script> \u00e9\u0301 \U0001f4a9 \x7f \u200b",
        "content_html": "&lt;script&gt; <p>\n\r</p>",
        "reply_to": None,
        "mentions": [2, 9],
        "created_at": datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC),
        "updated_at": datetime(2026, 12, 1, 0, 0, 0, 123456, tzinfo=UTC),
        "edited": False,
        "deleted": True,
        "attachments": [FILE, {**FILE, "id": 4, "filename": "plain"}],
    }
    base.update(fields)
    return base


ITEMS = [
    message(11),
    message(12, author=None, reply_to=11, mentions=[], attachments=[], content=""),
    message(
        13,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=9))),
        updated_at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ),
]


def test_a_history_page_is_the_bytes_the_pydantic_route_answered() -> None:
    """What `response_model=MessagePage` made of the same page, through FastAPI's encoder."""
    for next_cursor in (None, 11):
        page = {"items": ITEMS, "next_cursor": next_cursor}
        before = JSONResponse(jsonable_encoder(MessagePage.model_validate(page))).body
        assert jsonbytes.dumps(page) == before


def test_a_frame_is_the_text_the_standard_encoder_wrote() -> None:
    """Event frames: the old json.dumps of the pydantic mode="json" dump, same text."""
    view = MessagePage.model_validate({"items": ITEMS, "next_cursor": None}).items[0]
    frame = {"type": "message.created", "room_id": 1, "seq": 11}
    old = json.dumps(
        {**frame, "message": view.model_dump(mode="json")},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert protocol.dumps({**frame, "message": view.model_dump(mode="json")}) == old
    assert protocol.dumps({**frame, "message": ITEMS[0]}) == old
