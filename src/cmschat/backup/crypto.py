"""Compression and encryption of backup artifacts: zstd inside age (X25519 recipients).

Everything streams through fixed-size buffers, so memory stays bounded whatever the size
of the database. An artifact is a plain age file: ``age -d -i KEY FILE | zstd -d`` opens
it without cmschat. Messages never contain key material, only which step failed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import pyrage
import zstandard

from cmschat.errors import CmschatError, ConfigError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
IDENTITY_NAME = "backup-identity.txt"


class BackupCorrupt(CmschatError):
    """An artifact cannot be decrypted or does not match its manifest."""

    code = "backup_corrupt"


@dataclass(frozen=True)
class Sealed:
    """What was written: the encrypted file's size and SHA-256, and the plain content's."""

    size: int
    sha256: str
    plain_size: int
    plain_sha256: str


class _Hashing(io.RawIOBase):
    """A writer that hashes and counts what passes through it to ``target``."""

    def __init__(self, target: IO[bytes] | Any) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


class _HashingReader(io.RawIOBase):
    """A reader that hashes and counts what is read from ``source``."""

    def __init__(self, source: IO[bytes] | Any) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def parse_recipients(values: list[str]) -> list[pyrage.x25519.Recipient]:
    """age public keys; ConfigError naming the setting (never the value) for a bad one."""
    try:
        return [pyrage.x25519.Recipient.from_str(value) for value in values]
    except pyrage.RecipientError:
        raise ConfigError("CMSCHAT_BACKUP__RECIPIENTS: not a valid age public key") from None


def load_identity(path: Path) -> pyrage.x25519.Identity:
    """The private key in an age identity file (comment lines skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"CMSCHAT_BACKUP__IDENTITY_FILE: {path} does not exist; "
            "the private key is needed to verify, restore and drill"
        ) from None
    keys = [line.strip() for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise ConfigError(f"CMSCHAT_BACKUP__IDENTITY_FILE: {path} holds no age private key")
    try:
        return pyrage.x25519.Identity.from_str(keys[0])
    except pyrage.IdentityError:
        raise ConfigError(f"CMSCHAT_BACKUP__IDENTITY_FILE: {path} holds a damaged key") from None


def generate_identity(path: Path) -> str:
    """Write a new private key to ``path`` (0600) and return its public key."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"# cmschat backup key, made by cmschat\n# public key: {public}\n")
        file.write(f"{identity}\n")
    return public


def public_of(path: Path) -> str:
    """The public key matching the identity in ``path``."""
    return str(load_identity(path).to_public())


def seal(source: IO[bytes] | Any, target: IO[bytes], recipients: list[str]) -> Sealed:
    """Compress and encrypt ``source`` into ``target`` (blocking; run it in a thread)."""
    plain = _HashingReader(source)
    compressed = zstandard.ZstdCompressor(level=3, threads=0).stream_reader(
        cast(IO[bytes], plain), read_size=CHUNK, closefd=False
    )
    sink = _Hashing(target)
    try:
        pyrage.encrypt_io(compressed, sink, parse_recipients(recipients))
    except pyrage.EncryptError as exc:
        raise CmschatError(f"backup: encryption failed ({type(exc).__name__})") from None
    return Sealed(sink.size, sink.digest.hexdigest(), plain.size, plain.digest.hexdigest())


def seal_output(
    process: subprocess.Popen[bytes], target: Path, recipients: list[str]
) -> tuple[Sealed, int]:
    """Seal a client's standard output into the new file ``target``; its exit status too."""
    assert process.stdout is not None  # noqa: S101 - the caller asked for a pipe
    try:
        with target.open("xb") as writer:
            sealed = seal(process.stdout, writer, recipients)
    finally:
        process.stdout.close()
        code = process.wait()
    return sealed, code


def open_sealed(
    source: IO[bytes],
    target: IO[bytes] | Any,
    identity: pyrage.x25519.Identity,
    *,
    name: str,
    expected: Sealed | None = None,
) -> Sealed:
    """Decrypt and decompress ``source`` into ``target``; BackupCorrupt on any damage.

    With ``expected``, the encrypted and the plain bytes must match it exactly.
    """
    encrypted = _HashingReader(source)
    plain = _Hashing(target)
    decompressor = zstandard.ZstdDecompressor().stream_writer(cast(IO[bytes], plain), closefd=False)
    try:
        pyrage.decrypt_io(encrypted, decompressor, [identity])
        decompressor.flush()  # type: ignore[no-untyped-call]
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            raise BackupCorrupt(
                f"{name}: the identity file's key cannot open it (wrong key)"
            ) from None
        raise BackupCorrupt(f"{name}: not a readable age file ({exc})") from None
    except (OSError, zstandard.ZstdError):
        raise BackupCorrupt(f"{name}: damaged or truncated (authentication failed)") from None
    got = Sealed(encrypted.size, encrypted.digest.hexdigest(), plain.size, plain.digest.hexdigest())
    if expected is not None and (got.sha256, got.size) != (expected.sha256, expected.size):
        raise BackupCorrupt(f"{name}: checksum differs from the manifest")
    if expected is not None and got.plain_sha256 != expected.plain_sha256:
        raise BackupCorrupt(f"{name}: content checksum differs from the manifest")
    return got


def file_sha256(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 and size of a file, read a chunk at a time."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(size)
    return digest.hexdigest(), size
