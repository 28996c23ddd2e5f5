"""Attachment bytes behind one interface: a local directory or an S3-compatible bucket.

Every file-system and boto3 call runs in a worker thread, one bounded chunk at a time, so
a large upload or download neither blocks the event loop nor sits whole in memory. A save
is all or nothing: a reader finds the complete object or no object, never part of one.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, TypeVarTuple
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import anyio
import anyio.to_thread
import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from cmschat.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Keys come from new_key(). The pattern also keeps any other key inside the store: no dot
# (so no ".."), no empty segment and no leading "/" (so no absolute path).
_KEY = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Small upload chunks are written a MiB at a time: one thread hop per MiB, not per chunk.
_WRITE_BATCH = 1 << 20
# S3 refuses parts under 5 MiB (except the last); 8 MiB keeps memory bounded per upload.
PART_SIZE = 8 << 20
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class Storage(Protocol):
    """Where attachment bytes live, addressed by opaque keys from new_key()."""

    async def save(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the stream under key and return its size; on any error store nothing."""
        ...

    # A plain def: implementations are async generators, which are called without await.
    def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yield bytes start..end inclusive (to the end if None); FileNotFoundError if none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is fine."""
        ...

    async def exists(self, key: str) -> bool:
        """True if an object is stored under key."""
        ...

    async def ping(self) -> None:
        """Raise unless the store can be reached and written to."""
        ...


def new_key() -> str:
    """A random, unguessable key (192 bits), sharded so no directory grows too large."""
    token = secrets.token_urlsafe(24)
    return f"{token[:2]}/{token[2:4]}/{token[4:]}"


def check_key(key: str) -> str:
    """The key itself, or ValueError if it could name anything outside the store."""
    # ValueError, not Invalid: keys never come from users, so a bad one is a bug.
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def _check_range(start: int, end: int | None, chunk_size: int) -> None:
    if start < 0 or (end is not None and end < start) or chunk_size < 1:
        raise ValueError(f"bad range {start}-{end} or chunk size {chunk_size}")


async def _thread(func: Callable[[*Ts], T], *args: *Ts) -> T:
    return await anyio.to_thread.run_sync(func, *args)


async def _cleanup(func: Callable[[], None]) -> None:
    # Shielded: a cancelled save must still remove what it had started.
    with anyio.CancelScope(shield=True):
        await _thread(func)


def _make_dirs(root: Path, directory: Path) -> None:
    # One level at a time: mkdir(parents=True) would ignore the mode for the parents.
    path = root
    for part in directory.relative_to(root).parts:
        path = path / part
        path.mkdir(mode=0o700, exist_ok=True)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable, not only the file's contents.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PendingFile:
    """A private temporary file beside its target, renamed over it once complete."""

    def __init__(self, root: Path, target: Path) -> None:
        self.root = root
        self.target = target
        # A dot never appears in a key, so a temporary name can never be read as one.
        self.temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        self.fd: int | None = None
        self.committing = False

    def open(self) -> None:
        """Create the temporary file, and the shard directories it needs."""
        _make_dirs(self.root, self.target.parent)
        # O_EXCL never reuses a file planted there; 0600 can only lose bits to the umask,
        # so the bytes are never group/world-readable nor executable.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        self.fd = os.open(self.temp, flags, 0o600)

    def write(self, batch: list[bytes]) -> None:
        """Append the chunks."""
        fd = self._open_fd()
        for chunk in batch:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]

    def commit(self) -> None:
        """Flush to disk and rename into place, so readers see all of it or nothing."""
        fd = self._open_fd()
        self.committing = True
        os.fchmod(fd, 0o600)  # Exactly 0600 even if an odd umask took the owner's bits.
        os.fsync(fd)
        self.fd = None
        os.close(fd)
        os.replace(self.temp, self.target)
        _fsync_dir(self.target.parent)

    def _open_fd(self) -> int:
        if self.fd is None:
            raise RuntimeError(f"{self.temp} is not open")
        return self.fd

    def discard(self) -> None:
        """Close and remove the temporary file, and the target if the commit got that far."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
        self.temp.unlink(missing_ok=True)
        if self.committing:
            self.target.unlink(missing_ok=True)


class LocalStorage:
    """Files under one private directory (0700), each file 0600."""

    def __init__(self, root: Path) -> None:
        # Plain calls: the store is made once at start-up, before the loop serves anyone.
        self.root = root.absolute()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def save(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Write to a temporary file, fsync, then rename over the final name."""
        pending = _PendingFile(self.root, self._path(key))
        size = batched = 0
        batch: list[bytes] = []
        try:
            await _thread(pending.open)
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                size += len(chunk)
                if batched >= _WRITE_BATCH:
                    await _thread(pending.write, batch)
                    batch, batched = [], 0
            await _thread(pending.write, batch)
            await _thread(pending.commit)
        except BaseException:
            await _cleanup(pending.discard)
            raise
        return size

    async def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yield bytes start..end inclusive, chunk_size at a time."""
        _check_range(start, end, chunk_size)
        path = self._path(key)
        file = await _thread(partial(path.open, "rb", buffering=0))
        try:
            position = start
            while end is None or position <= end:
                wanted = chunk_size if end is None else min(chunk_size, end + 1 - position)
                data = await _thread(os.pread, file.fileno(), wanted, position)
                if not data:
                    break
                position += len(data)
                yield data
        finally:
            await _cleanup(file.close)

    async def delete(self, key: str) -> None:
        """Remove the file; a missing one is fine."""
        await _thread(partial(self._path(key).unlink, missing_ok=True))

    async def exists(self, key: str) -> bool:
        """True if the file exists."""
        return await _thread(self._path(key).is_file)

    async def ping(self) -> None:
        """Raise OSError unless the root is a directory this process may write to."""
        await _thread(self._check_root)

    def _check_root(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(f"{self.root} is not a writable directory")


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
                    await _thread(pending.add_part, part)
                    part = io.BytesIO()
            part.seek(0)
            await _thread(pending.commit, part)
        except BaseException:
            await _cleanup(pending.discard)
            raise
        return size

    async def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yield bytes start..end inclusive, fetched with one ranged GET, chunk_size at a time."""
        _check_range(start, end, chunk_size)
        body = await _thread(self._open, self._name(key), start, end)
        if body is None:
            return
        try:
            while data := await _thread(body.read, chunk_size):
                yield data
        finally:
            await _cleanup(body.close)

    def _open(self, name: str, start: int, end: int | None) -> Any:
        # No Range header for a whole read: S3 refuses "bytes=0-" on an empty object.
        ranged: dict[str, str] = {}
        if start or end is not None:
            ranged["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            return self._client.get_object(Bucket=self.bucket, Key=name, **ranged)["Body"]
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise FileNotFoundError(name) from exc
            # Starting past the end: nothing to send, as a local file would give.
            if _error_code(exc) == "InvalidRange":
                return None
            raise

    async def delete(self, key: str) -> None:
        """Delete the object; S3 answers a missing one with success too."""
        await _thread(partial(self._client.delete_object, Bucket=self.bucket, Key=self._name(key)))

    async def exists(self, key: str) -> bool:
        """True if head_object finds the object."""
        return await _thread(self._exists, self._name(key))

    def _exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return False
            raise
        return True

    async def ping(self) -> None:
        """Raise unless the bucket answers head_bucket."""
        await _thread(partial(self._client.head_bucket, Bucket=self.bucket))


def storage_from_url(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
) -> Storage:
    """LocalStorage for file:///ABSOLUTE/PATH, S3Storage for s3://BUCKET/PREFIX."""
    parts = urlsplit(url)
    # The URL is not echoed back: a mistyped one may hold credentials.
    usage = "CMSCHAT_STORAGE_URL: use file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX"
    if parts.query or parts.fragment:
        raise ConfigError(usage)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"} and parts.path[:1] == "/":
        path = Path(url2pathname(parts.path))
        try:
            return LocalStorage(path)
        except OSError as exc:
            raise ConfigError(f"CMSCHAT_STORAGE_URL: cannot create {path}: {exc}") from exc
    if parts.scheme == "s3" and _BUCKET.fullmatch(parts.netloc):
        return S3Storage(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=s3_endpoint_url,
            region=s3_region,
            access_key=s3_access_key,
            secret_key=s3_secret_key,
        )
    raise ConfigError(usage)
