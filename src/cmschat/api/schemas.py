"""API shapes shared by every route: the error body."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    """What went wrong, for programs (``code``) and people (``message``)."""

    code: str
    message: str
    field: str | None = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail
