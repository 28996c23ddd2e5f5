"""The upload pipeline: stream a file in, inspect it, hold it to the quotas, store it.

Uploads own their transactions (they take the Database, like jobs do): the row is
committed *before* any byte is stored and the bytes are removed *before* the row, so storage
never holds bytes no row points at, even across a crash. The clean-up job
(``attachments.erasure``) finishes whatever a crash interrupted.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

import anyio.to_thread
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.attachments import images, inspection
from cmschat.attachments.access import RoomAccess
from cmschat.attachments.models import Attachment, AttachmentState
from cmschat.attachments.storage import Storage, new_key
from cmschat.audit import service as audit
from cmschat.db.actors import user_actor
from cmschat.db.session import Database
from cmschat.errors import Invalid, TooLarge

log = logging.getLogger(__name__)
HEAD_BYTES = 4096
CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one upload may be."""

    max_file_bytes: int
    quota_bytes: int
    allowed_extensions: frozenset[str]


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


async def _used_bytes(session: AsyncSession, user_id: int) -> int:
    used = await session.scalar(
        select(func.coalesce(func.sum(Attachment.size), 0)).where(
            Attachment.uploader_id == user_id, Attachment.state != AttachmentState.deleting
        )
    )
    return int(used or 0)


class _Meter:
    """Counts and hashes bytes on their way to storage; stops at the size limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    def take(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"files are at most {_mib(self.limit)}")
        self.digest.update(chunk)
        return chunk


async def _head_and_rest(chunks: AsyncIterator[bytes]) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first HEAD_BYTES (for sniffing), and an iterator over everything (head included)."""
    head = b""
    source = chunks.__aiter__()
    pending: list[bytes] = []
    async for chunk in source:
        pending.append(chunk)
        head += chunk
        if len(head) >= HEAD_BYTES:
            break

    async def everything() -> AsyncIterator[bytes]:
        for chunk in pending:
            yield chunk
        async for chunk in source:
            yield chunk

    return head[:HEAD_BYTES], everything()


async def _spool(chunks: AsyncIterator[bytes], meter: _Meter) -> IO[bytes]:
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=images.SPOOL_BYTES)  # noqa: SIM115
    async for chunk in chunks:
        await anyio.to_thread.run_sync(spool.write, meter.take(chunk))
    return spool


async def _from_file(source: IO[bytes], meter: _Meter) -> AsyncIterator[bytes]:
    while chunk := await anyio.to_thread.run_sync(source.read, CHUNK):
        yield meter.take(chunk)


async def _metered(chunks: AsyncIterator[bytes], meter: _Meter) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield meter.take(chunk)


async def upload(
    *,
    db: Database,
    storage: Storage,
    user: User,
    room_id: int,
    filename: str,
    chunks: AsyncIterator[bytes],
    limits: Limits,
    rooms: RoomAccess,
) -> Attachment:
    """Check, store and record one uploaded file; on refusal nothing stays behind."""
    name = inspection.clean_filename(filename)
    inspection.check_extension(name, allowed=limits.allowed_extensions)
    actor = user_actor(user.id)
    async with db.unit_of_work(actor, actor_name=user.username) as session:
        await rooms.require_open_member_room(session, user=user, room_id=room_id)
        if await _used_bytes(session, user.id) >= limits.quota_bytes:
            raise TooLarge(f"your uploads already use your quota of {_mib(limits.quota_bytes)}")
        row = Attachment(
            room_id=room_id,
            uploader_id=user.id,
            state=AttachmentState.uploading,
            storage_key=new_key(),
            filename=name,
            content_type="",
            size=0,
            sha256="",
            is_image=False,
        )
        session.add(row)
    try:
        head, everything = await _head_and_rest(chunks)
        sniffed = inspection.check_content(name, head)
        content_type, is_image = sniffed.content_type, False
        if sniffed.family == "image":
            content_type, is_image, meter = await _store_image(
                storage, row.storage_key, everything, limits, sniffed.content_type
            )
        else:
            meter = _Meter(limits.max_file_bytes)
            await storage.save(row.storage_key, _metered(everything, meter))
        if meter.size == 0:
            raise Invalid("the file is empty", field="file")
        async with db.unit_of_work(actor, actor_name=user.username) as session:
            await _hold_quota(session, user.id)
            attachment = await session.get(Attachment, row.id)
            assert attachment is not None  # noqa: S101 - committed above, only we move it
            if (
                await _used_bytes(session, user.id) - attachment.size + meter.size
                > limits.quota_bytes
            ):
                raise TooLarge(f"this file would exceed your quota of {_mib(limits.quota_bytes)}")
            attachment.size, attachment.sha256 = meter.size, meter.digest.hexdigest()
            attachment.content_type, attachment.is_image = content_type, is_image
            attachment.state = AttachmentState.ready
            audit.record(
                session,
                action="attachment.uploaded",
                target_type="attachment",
                target_id=attachment.id,
                changes={
                    "room_id": room_id,
                    "filename": audit.text_digest(name),
                    "content_type": content_type,
                    "size": meter.size,
                    "sha256": attachment.sha256,
                },
            )
        return attachment
    except BaseException:
        await _discard(db, storage, row.id, row.storage_key, actor)
        raise


async def _hold_quota(session: AsyncSession, user_id: int) -> None:
    """Lock the uploader's row until commit: uploads finishing at once then count each
    other's bytes one after the other (READ COMMITTED would let each see only its own).
    SQLite's write lock already serialises them."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def _store_image(
    storage: Storage, key: str, chunks: AsyncIterator[bytes], limits: Limits, sniffed_type: str
) -> tuple[str, bool, _Meter]:
    """Spool, strip metadata in a thread, store the cleaned bytes; other images go as sent."""
    incoming = _Meter(limits.max_file_bytes)
    spool = await _spool(chunks, incoming)
    try:
        cleaned = await anyio.to_thread.run_sync(images.clean_image, spool)
        meter = _Meter(limits.max_file_bytes)
        if cleaned is None:  # a format we do not re-encode: store as sent, not as an image
            await anyio.to_thread.run_sync(spool.seek, 0)
            await storage.save(key, _from_file(spool, meter))
            return sniffed_type, False, meter
        file, content_type = cleaned
        try:
            await storage.save(key, _from_file(file, meter))
        finally:
            file.close()
        return content_type, True, meter
    finally:
        spool.close()


async def _discard(
    db: Database, storage: Storage, attachment_id: int, key: str, actor: str
) -> None:
    """Remove a failed upload: bytes first, then the row."""
    try:
        await storage.delete(key)
        async with db.unit_of_work(actor) as session:
            attachment = await session.get(Attachment, attachment_id)
            if attachment is not None:
                await session.delete(attachment)
    except Exception:
        # The row stays 'uploading'; the clean-up job removes it and its bytes later.
        log.warning("could not discard a failed upload", exc_info=True)
