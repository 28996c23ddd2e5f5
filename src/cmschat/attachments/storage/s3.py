"""Attachment bytes in an S3-compatible bucket: multipart uploads, ranged reads."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import IO, Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from cmschat.attachments.storage.base import (
    MISSING,
    PART_SIZE,
    check_key,
    check_range,
    in_thread,
    shielded,
)

log = logging.getLogger(__name__)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _quietly(call: Callable[[], object], what: str) -> None:
    # Clean-up after a failure: the original error matters more, so this one is logged.
    try:
        call()
    except Exception:
        log.warning("storage clean-up failed: %s", what, exc_info=True)


class _PendingObject:
    """One upload: a multipart upload once it outgrows a part, else a single put."""

    def __init__(self, client: Any, bucket: str, name: str) -> None:
        self.client = client
        self.where = {"Bucket": bucket, "Key": name}
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.committing = False

    def add_part(self, data: IO[bytes]) -> None:
        """Upload one part, starting the multipart upload on the first."""
        if self.upload_id is None:
            started = self.client.create_multipart_upload(
                **self.where, ServerSideEncryption="AES256"
            )
            self.upload_id = str(started["UploadId"])
        number = len(self.parts) + 1
        uploaded = self.client.upload_part(
            **self.where, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"PartNumber": number, "ETag": uploaded["ETag"]})

    def commit(self, tail: io.BytesIO) -> None:
        """Store the rest; the object appears only when this request succeeds."""
        self.committing = True
        if self.upload_id is None:
            self.client.put_object(**self.where, Body=tail, ServerSideEncryption="AES256")
            return
        if tail.getbuffer().nbytes:
            self.add_part(tail)
        self.client.complete_multipart_upload(
            **self.where, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def discard(self) -> None:
        """Abort the multipart upload, and delete the object if the commit got that far."""
        if self.upload_id is not None:
            abort = partial(
                self.client.abort_multipart_upload, **self.where, UploadId=self.upload_id
            )
            _quietly(abort, "abort multipart upload")
        if self.committing:
            _quietly(partial(self.client.delete_object, **self.where), "delete object")


class S3Storage:
    """Objects in an S3-compatible bucket under a prefix, encrypted at rest (SSE-S3)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
            # Self-hosted S3 (MinIO, Ceph, moto) rarely has the wildcard DNS that
            # virtual-host addressing needs; path style works everywhere.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # An own session: the default one is shared module state. The client is made
        # once and is safe to use from the worker threads.
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def save(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Upload in parts of PART_SIZE (one put if smaller); abort on any error."""
        pending = _PendingObject(self._client, self.bucket, self._name(key))
        size = 0
        # Chunks gather in a file-like buffer that boto3 reads as is: one copy of a part
        # in memory, never a second one made by joining.
        part = io.BytesIO()
        try:
            async for chunk in chunks:
                part.write(chunk)
                size += len(chunk)
                if part.tell() >= PART_SIZE:
                    part.seek(0)
                    await in_thread(pending.add_part, part)
                    part = io.BytesIO()
            part.seek(0)
            await in_thread(pending.commit, part)
        except BaseException:
            await shielded(pending.discard)
            raise
        return size

    async def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yield bytes start..end inclusive, fetched with one ranged GET, chunk_size at a time."""
        check_range(start, end, chunk_size)
        body = await in_thread(self._open, self._name(key), start, end)
        if body is None:
            return
        try:
            while data := await in_thread(body.read, chunk_size):
                yield data
        finally:
            await shielded(body.close)

    def _open(self, name: str, start: int, end: int | None) -> Any:
        # No Range header for a whole read: S3 refuses "bytes=0-" on an empty object.
        ranged: dict[str, str] = {}
        if start or end is not None:
            ranged["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            return self._client.get_object(Bucket=self.bucket, Key=name, **ranged)["Body"]
        except ClientError as exc:
            if _error_code(exc) in MISSING:
                raise FileNotFoundError(name) from exc
            # Starting past the end: nothing to send, as a local file would give.
            if _error_code(exc) == "InvalidRange":
                return None
            raise

    async def delete(self, key: str) -> None:
        """Delete the object; S3 answers a missing one with success too."""
        await in_thread(
            partial(self._client.delete_object, Bucket=self.bucket, Key=self._name(key))
        )

    async def exists(self, key: str) -> bool:
        """True if head_object finds the object."""
        return await in_thread(self._exists, self._name(key))

    def _exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in MISSING:
                return False
            raise
        return True

    async def ping(self) -> None:
        """Raise unless the bucket answers head_bucket."""
        await in_thread(partial(self._client.head_bucket, Bucket=self.bucket))
