"""Answers a route serialised itself (``cmschat.jsonbytes``): sent as they are."""

from __future__ import annotations

from starlette.responses import Response


class JSONBytes(Response):
    """JSON bytes already encoded: FastAPI neither validates nor re-encodes them."""

    media_type = "application/json"
