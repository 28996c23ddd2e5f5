"""API shapes for attachments."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AttachmentRead(BaseModel):
    """An attachment's metadata, as uploads answer and messages carry it (never its bytes)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    room_id: int
    message_id: int | None
    uploader_id: int | None
    filename: str
    size: int
    content_type: str
    sha256: str
    is_image: bool
