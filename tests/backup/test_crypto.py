"""The encryption pipeline on its own: bounded memory, clear errors, hand-decryptable."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from bench import children

SEAL_BIG = """
import io, resource, sys
from cmschat.backup.crypto import seal, open_sealed
import pyrage

class Zeros(io.RawIOBase):
    def __init__(self, n): self.n = n
    def readable(self): return True
    def readinto(self, b):
        k = min(len(b), self.n); b[:k] = bytes(range(256)) * (k // 256) + bytes(k % 256)
        self.n -= k
        return k

class Sink(io.RawIOBase):
    def writable(self): return True
    def write(self, b): return len(b)

key = pyrage.x25519.Identity.generate()
out = io.BytesIO()
sealed = seal(Zeros(int(sys.argv[1])), out, [str(key.to_public())])
out.seek(0)
opened = open_sealed(out, Sink(), key, name="big", expected=sealed)
assert opened.plain_size == int(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_memory_stays_bounded_whatever_the_size(tmp_path: Path) -> None:
    """Sealing and opening 1 GiB takes no more memory than sealing 16 MiB, give or take."""

    def peak(size: int) -> int:
        result = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", SEAL_BIG, str(size)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            preexec_fn=children.with_parent(),
        )
        return int(result.stdout.strip())

    small, big = peak(16 << 20), peak(1 << 30)
    # The compressed output stays in a BytesIO here, and compresses 256:1 at most; the
    # pipeline itself must not grow with the input.
    assert big - small < 64, (small, big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


def test_age_and_zstd_open_an_artifact_by_hand(tmp_path: Path) -> None:
    """The emergency path of the runbook: ``age -d -i KEY FILE | zstd -d``."""
    import shutil

    from cmschat.backup.crypto import generate_identity, seal

    if shutil.which("age") is None or shutil.which("zstd") is None:
        pytest.fail("age and zstd must be installed (scripts/services installs them)")
    key = tmp_path / "key.txt"
    public = generate_identity(key)
    plain = ("안녕하세요 backup\n" * 10_000).encode()
    source, sealed_path = tmp_path / "plain", tmp_path / "artifact.zst.age"
    source.write_bytes(plain)
    with source.open("rb") as reader, sealed_path.open("wb") as writer:
        seal(reader, writer, [public])
    age = subprocess.run(  # noqa: S603 - fixed tools
        ["age", "-d", "-i", str(key), str(sealed_path)],  # noqa: S607
        capture_output=True,
        check=True,
        preexec_fn=children.with_parent(),
    )
    unpacked = subprocess.run(
        ["zstd", "-d", "-c"],  # noqa: S607
        input=age.stdout,
        capture_output=True,
        check=True,
        preexec_fn=children.with_parent(),
    )
    assert unpacked.stdout == plain
