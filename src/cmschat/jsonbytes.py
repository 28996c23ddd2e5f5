"""JSON out, fast: one encoder (orjson) for history pages and WebSocket frames.

Its output is the bytes pydantic's ``mode="json"`` and FastAPI's encoder write for the same
values (UTC as ``Z``, no spaces, non-ASCII as UTF-8), so pre-serialised answers and frames
look exactly like the ones built through the models (tests/unit/test_jsonbytes.py).
"""

from __future__ import annotations

from typing import Any

import orjson

# NON_STR_KEYS: the standard encoder turns int keys into strings, and so must this one.
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``; aware datetimes as ISO 8601, UTC written ``Z``."""
    return orjson.dumps(value, option=_OPTIONS)


def dumps_text(value: Any) -> str:
    """``dumps`` as text (WebSocket text frames)."""
    return orjson.dumps(value, option=_OPTIONS).decode()


def is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (and so by ``dumps``): a lone surrogate, from
    an escaped one in JSON read by the standard parser or from invalid UTF-8 in a command's
    arguments or stdin, cannot."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def raw(json: bytes) -> orjson.Fragment:
    """JSON already serialised (by ``dumps``), written as is inside a value ``dumps`` takes."""
    return orjson.Fragment(json)
