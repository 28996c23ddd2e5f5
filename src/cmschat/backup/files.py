"""The attachment bytes of a backup: one tar archive, compressed and encrypted.

The archive lists exactly the files the database snapshot names, so a file erased by
retention after the backup stays restorable from it. Bytes stream from the store through
tar, zstd and age a chunk at a time; ``age -d … | zstd -d | tar x`` unpacks it by hand.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import pyrage

from cmschat.attachments.storage import Storage, check_key
from cmschat.attachments.storage.base import in_thread
from cmschat.backup.crypto import CHUNK, BackupCorrupt, Sealed, open_sealed, seal
from cmschat.backup.manifest import FileEntry

log = logging.getLogger(__name__)

ARTIFACT = "files.tar.zst.age"
BLOCK = tarfile.BLOCKSIZE


@dataclass
class Archived:
    """What went into the archive."""

    sealed: Sealed
    files: list[FileEntry] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Named by the snapshot, gone from the store by the time they were read."""


class _Pull(io.RawIOBase):
    """A blocking reader over an async iterator, for a worker thread started by anyio."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = memoryview(b"")
        self.done = False

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes | None:
        try:
            return await anext(self.chunks)
        except StopAsyncIteration:
            return None

    def readinto(self, buffer: Any) -> int:
        while not self.buffer and not self.done:
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self.done = True
            else:
                self.buffer = memoryview(chunk)
        size = min(len(buffer), len(self.buffer))
        buffer[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size


async def _tar_stream(
    storage: Storage, entries: list[FileEntry], archived: Archived
) -> AsyncGenerator[bytes, None]:
    for entry in entries:
        if not await storage.exists(entry.key):
            archived.missing.append(entry.key)
            log.warning(
                "backup: file %s is gone from the store (erased since the snapshot)",
                entry.key,
                extra={"event.action": "backup.file_missing"},
            )
            continue
        info = tarfile.TarInfo(entry.key)
        info.size, info.mode = entry.size, 0o600
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        digest, size = hashlib.sha256(), 0
        async for chunk in storage.read(entry.key, chunk_size=CHUNK):
            if size + len(chunk) > entry.size:
                raise BackupCorrupt(f"backup: file {entry.key} is larger than its record")
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        if size != entry.size:
            raise BackupCorrupt(f"backup: file {entry.key} is shorter than its record")
        if digest.hexdigest() != entry.sha256:
            log.warning(
                "backup: file %s does not match its recorded checksum (damaged in the store)",
                entry.key,
                extra={"event.action": "backup.file_damaged"},
            )
        archived.files.append(entry)
        if size % BLOCK:
            yield bytes(BLOCK - size % BLOCK)
    yield bytes(2 * BLOCK)


async def archive_files(
    storage: Storage, entries: list[FileEntry], destination: Path, recipients: list[str]
) -> Archived:
    """Seal the named files into ``destination``."""
    archived = Archived(Sealed(0, "", 0, ""))
    stream = _tar_stream(storage, entries, archived)

    def write() -> Sealed:
        with destination.open("xb") as writer:
            return seal(_Pull(stream), writer, recipients)

    try:
        archived.sealed = await in_thread(write)
    finally:
        await stream.aclose()
    return archived


async def unpack_files(
    source: Path,
    scratch: Path,
    storage: Storage,
    identity: pyrage.x25519.Identity,
    *,
    expected: Sealed,
    entries: list[FileEntry],
) -> int:
    """Decrypt the archive into ``scratch``, then save each file into ``storage``, checked.

    Returns the number of files restored; BackupCorrupt on any damage or mismatch.
    """
    plain = scratch / "files.tar"

    def decrypt() -> None:
        with source.open("rb") as reader, plain.open("xb") as writer:
            open_sealed(reader, writer, identity, name=ARTIFACT, expected=expected)

    await in_thread(decrypt)
    wanted = {entry.key: entry for entry in entries}
    restored = 0
    archive = await in_thread(tarfile.open, plain, "r:")
    try:
        while (member := await in_thread(archive.next)) is not None:
            entry = wanted.get(member.name)
            if entry is None or not member.isfile():
                raise BackupCorrupt(f"{ARTIFACT}: unexpected entry {member.name!r}")
            reader = await in_thread(archive.extractfile, member)
            if reader is None:
                raise BackupCorrupt(f"{ARTIFACT}: unreadable entry {member.name!r}")
            digest = hashlib.sha256()

            async def chunks(file: Any = reader, hasher: Any = digest) -> AsyncIterator[bytes]:
                while data := await in_thread(file.read, CHUNK):
                    hasher.update(data)
                    yield data

            await storage.save(check_key(member.name), chunks())
            if digest.hexdigest() != entry.sha256:
                raise BackupCorrupt(f"{ARTIFACT}: file {member.name} fails its checksum")
            restored += 1
    finally:
        await in_thread(archive.close)
        plain.unlink(missing_ok=True)
    return restored
