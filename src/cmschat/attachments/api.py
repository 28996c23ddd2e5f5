"""Routes: upload into a room, download with a permission check on every request."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from cmschat.api.deps import Context, CurrentUser, ResourceId, SessionDep, UserOwnTransactions
from cmschat.api.errors import DOWNLOAD_ERRORS, UPLOAD_ERRORS, responses
from cmschat.attachments import multipart, service, uploads
from cmschat.attachments.schemas import AttachmentRead
from cmschat.chat import permissions
from cmschat.errors import TooLarge

router = APIRouter(tags=["attachments"])
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Multipart framing around the file: boundaries and part headers.
ENVELOPE_BYTES = 16 * 1024


@router.post(
    "/rooms/{room_id}/attachments",
    status_code=201,
    response_model=AttachmentRead,
    responses=responses(*UPLOAD_ERRORS),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload(
    room_id: ResourceId, request: Request, user: UserOwnTransactions, context: Context
) -> AttachmentRead:
    """Upload a file (multipart field ``file``), streamed to storage and checked on the way."""
    limits = context.attachment_limits
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_file_bytes + ENVELOPE_BYTES:
        raise TooLarge(f"files are at most {limits.max_file_bytes / (1 << 20):g} MiB")
    filename, chunks = await multipart.file_part(
        request.headers.get("content-type"), request.stream()
    )
    attachment = await uploads.upload(
        db=context.db,
        storage=context.storage,
        user=user,
        room_id=room_id,
        filename=filename,
        chunks=chunks,
        limits=limits,
        rooms=permissions,
    )
    return AttachmentRead.model_validate(attachment)


def _disposition(filename: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback plus the exact name in ``filename*`` (Korean survives)."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single ``bytes=`` range, None for the whole file."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # unsupported forms (several ranges...) get the whole file, as allowed
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise _Unsatisfiable(size)
    return start, end


class _Unsatisfiable(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


@router.get(
    "/attachments/{attachment_id}",
    response_class=StreamingResponse,
    responses={
        # The file's own type, as stored (image/gif, application/pdf, ...), not one type.
        200: {
            "description": "the file, in the content type it was stored with",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        206: {"description": "a byte range"},
        304: {"description": "not modified"},
        416: {"description": "range not satisfiable"},
        **responses(*DOWNLOAD_ERRORS),
    },
)
async def download(
    attachment_id: ResourceId,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    context: Context,
    disposition: Annotated[str, Query(pattern="^(attachment|inline)$")] = "attachment",
) -> Response:
    """The file, to members of its room only (404 for anyone else); ranges supported."""
    attachment = await service.readable_attachment(
        session, user=user, attachment_id=attachment_id, rooms=permissions
    )
    etag = f'"{attachment.sha256}"'
    headers = {
        "Content-Disposition": _disposition(
            attachment.filename, inline=disposition == "inline" and attachment.is_image
        ),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "ETag": etag,
        "Accept-Ranges": "bytes",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        span = _byte_range(request.headers.get("range"), attachment.size)
    except _Unsatisfiable as exc:
        headers["Content-Range"] = f"bytes */{exc.size}"
        return Response(status_code=416, headers=headers)
    start, end = span or (0, attachment.size - 1)
    headers["Content-Length"] = str(end - start + 1)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{attachment.size}"
    body: AsyncIterator[bytes] = context.storage.read(attachment.storage_key, start=start, end=end)
    return StreamingResponse(
        body, status_code=status, media_type=attachment.content_type, headers=headers
    )
