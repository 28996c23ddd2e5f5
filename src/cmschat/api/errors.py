"""Domain and framework errors as uniform JSON: ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cmschat import errors
from cmschat.api.schemas import ErrorBody

STATUS = {
    errors.Invalid: 422,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.RateLimited: 429,
    errors.Overloaded: 503,
    errors.UnsupportedType: 415,
    errors.TooLarge: 413,
}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response."""
    detail: dict[str, Any] = {"code": code, "message": message}
    if field:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def status_of(exc: errors.CmschatError) -> int:
    """The HTTP status for a domain error."""
    for kind, status in STATUS.items():
        if isinstance(exc, kind):
            return status
    return 400


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.CmschatError)  # noqa: S101 - registered for this type only
    headers = {}
    if isinstance(exc, errors.RateLimited | errors.Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    field = exc.field if isinstance(exc, errors.Invalid) else None
    return error_response(status_of(exc), exc.code, exc.message, field=field, headers=headers)


def _field_path(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(location[0] if location else "request")


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = _field_path(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return error_response(422, "invalid", f"{field}: {message}", field=field)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route"
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to a JSON response."""
    app.add_exception_handler(errors.CmschatError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


# The error statuses each kind of route answers, for its OpenAPI ``responses=``: the one
# table every route module uses (a route adds what is its own, such as 404 for an id).
# 401: no valid token; 403: the role does not allow it, or a password change is pending;
# 422: a query, path or body value out of range.
SIGNED_IN_ERRORS = (401, 403)
"""Any signed-in caller, no parameters."""
SIGNED_IN_QUERY_ERRORS = (401, 403, 422)
"""Any signed-in caller, with query parameters."""
ADMIN_ERRORS = (401, 403, 422)
"""Admins (or staff) only."""
ADMIN_BODY_ERRORS = (400, *ADMIN_ERRORS)
"""Admins only, with a JSON body (400: not JSON)."""
ROOM_ERRORS = (401, 403, 404)
"""A room, message or member the caller must be able to see (404 otherwise)."""
ROOM_BODY_ERRORS = (400, 401, 403, 404, 409, 422)
"""A change to a room or message (409: archived room, deleted message...)."""
ROOM_SEND_ERRORS = (*ROOM_BODY_ERRORS, 429, 503)
"""Sending a message (429: the send rate; 503: the server is at capacity, see Retry-After)."""
UPLOAD_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422)
"""Uploading a file (413: too large or over quota; 415: a refused type)."""
DOWNLOAD_ERRORS = (401, 403, 404, 422)
"""Downloading a file."""
CREDENTIALS_ERRORS = (400, 401, 422, 429)
"""Proving a password (429: too many wrong ones)."""
TOKEN_ERRORS = (401,)
"""Only a valid token is needed."""


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses a route can answer (from the table above)."""
    return {status: {"model": ErrorBody} for status in statuses}
