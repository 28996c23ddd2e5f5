"""Opaque list cursors: the last id a page showed, tagged by what was listed."""

from __future__ import annotations

import base64

from cmschat.errors import Invalid


def encode_cursor(tag: str, last_id: int) -> str:
    """The cursor continuing a list after ``last_id``."""
    return base64.urlsafe_b64encode(f"{tag}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(tag: str, cursor: str) -> int:
    """The id a cursor continues after; Invalid for one this server did not give out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(tag):
            raise ValueError(raw)
        last_id = int(raw[len(tag) :])
        # Ids are BIGINT: anything outside is not ours, and the driver could not bind it.
        if not 0 <= last_id < 2**63:
            raise ValueError(raw)
        return last_id
    except ValueError:
        raise Invalid("cursor is not one this server gave out", field="cursor") from None
