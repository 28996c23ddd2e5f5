"""The storage interface, keys, and what both stores share (worker threads, ranges)."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


# Keys come from new_key(). The pattern also keeps any other key inside the store: no dot
# (so no ".."), no empty segment and no leading "/" (so no absolute path).
_KEY = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Small upload chunks are written a MiB at a time: one thread hop per MiB, not per chunk.
WRITE_BATCH = 1 << 20
# S3 refuses parts under 5 MiB (except the last); 8 MiB keeps memory bounded per upload.
PART_SIZE = 8 << 20
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


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


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    """Refuse a byte range or chunk size no reader could mean."""
    if start < 0 or (end is not None and end < start) or chunk_size < 1:
        raise ValueError(f"bad range {start}-{end} or chunk size {chunk_size}")


async def in_thread(func: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run a blocking call in a worker thread."""
    return await anyio.to_thread.run_sync(func, *args)


async def shielded(func: Callable[[], None]) -> None:
    """Run a clean-up call in a thread, even while the caller is being cancelled."""
    # Shielded: a cancelled save must still remove what it had started.
    with anyio.CancelScope(shield=True):
        await in_thread(func)
