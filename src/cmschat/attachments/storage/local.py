"""Attachment bytes in a local directory: temporary file, fsync, rename (all or nothing)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

from cmschat.attachments.storage.base import (
    WRITE_BATCH,
    check_key,
    check_range,
    in_thread,
    shielded,
)


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
        self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def save(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Write to a temporary file, fsync, then rename over the final name."""
        pending = _PendingFile(self.root, self._path(key))
        size = batched = 0
        batch: list[bytes] = []
        try:
            await in_thread(pending.open)
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                size += len(chunk)
                if batched >= WRITE_BATCH:
                    await in_thread(pending.write, batch)
                    batch, batched = [], 0
            await in_thread(pending.write, batch)
            await in_thread(pending.commit)
        except BaseException:
            await shielded(pending.discard)
            raise
        return size

    async def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yield bytes start..end inclusive, chunk_size at a time."""
        check_range(start, end, chunk_size)
        path = self._path(key)
        file = await in_thread(partial(path.open, "rb", buffering=0))
        try:
            position = start
            while end is None or position <= end:
                wanted = chunk_size if end is None else min(chunk_size, end + 1 - position)
                data = await in_thread(os.pread, file.fileno(), wanted, position)
                if not data:
                    break
                position += len(data)
                yield data
        finally:
            await shielded(file.close)

    async def delete(self, key: str) -> None:
        """Remove the file; a missing one is fine."""
        await in_thread(partial(self._path(key).unlink, missing_ok=True))

    async def exists(self, key: str) -> bool:
        """True if the file exists."""
        return await in_thread(self._path(key).is_file)

    async def ping(self) -> None:
        """Raise OSError unless the root is a directory this process may write to."""
        await in_thread(self._check_root)

    def _check_root(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(f"{self.root} is not a writable directory")
