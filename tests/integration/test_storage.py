"""Attachment storage: one contract, run on LocalStorage and on S3Storage against moto's server."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from cmschat.attachments.storage import (
    PART_SIZE,
    LocalStorage,
    Storage,
    check_key,
    new_key,
    storage_from_url,
)
from cmschat.attachments.storage.s3 import S3Storage
from cmschat.errors import ConfigError, TooLarge
from tests.s3server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, S3Server

MiB = 1 << 20
ESCAPING_KEYS = ["../x", "/etc/passwd", "a/../../b", "", ".", "a//b", "a/", "a/./b", "a\\b", "a\0b"]


@dataclass
class Backend:
    """A store under test, with ways to see what it really holds."""

    name: str
    storage: Storage
    leftovers: Callable[[], list[str]]
    """Everything stored: objects, temporary files, unfinished multipart uploads."""
    holds: Callable[[str], bool]
    """Whether the raw bytes of a key are there (a file on disk, an object in the bucket)."""


def _local_backend(root: Path) -> Backend:
    def leftovers() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())

    return Backend("local", LocalStorage(root), leftovers, lambda key: (root / key).exists())


def _s3_backend(server: S3Server) -> Backend:
    prefix = f"t-{secrets.token_hex(4)}"
    client = server.client

    def leftovers() -> list[str]:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        uploads = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        objects = [item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", [])]
        return objects + [f"upload:{upload['Key']}" for upload in uploads]

    def holds(key: str) -> bool:
        try:
            client.head_object(Bucket=BUCKET, Key=f"{prefix}/{key}")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "404"
            return False
        return True

    return Backend("s3", server.storage(prefix), leftovers, holds)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn, empty."""
    if request.param == "local":
        return _local_backend(tmp_path / "files")
    return _s3_backend(request.getfixturevalue("s3_server"))


async def stream(chunks: Iterable[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    """The chunks as an upload stream; raises TooLarge after fail_after chunks, like a limit."""
    for index, chunk in enumerate(chunks):
        if index == fail_after:
            raise TooLarge("attachment is over the 10 MiB limit")
        yield chunk


def uneven(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    """data cut into chunks of the given sizes, repeated."""
    sizes = list(sizes)
    position = index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        yield data[position : position + size]
        position += size
        index += 1


async def read_all(storage: Storage, key: str, **kwargs: Any) -> bytes:
    """Every chunk of a read, joined, checking no chunk is over chunk_size."""
    limit = kwargs.get("chunk_size", MiB)
    chunks = [chunk async for chunk in storage.read(key, **kwargs)]
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    return b"".join(chunks)


async def test_round_trip_of_a_multi_chunk_stream(backend: Backend) -> None:
    data = os.urandom(12 * MiB + 12_345)
    key = new_key()

    size = await backend.storage.save(key, stream(uneven(data, [1, 65_536, 3 * MiB + 7, 777_777])))

    assert size == len(data)
    assert await backend.storage.exists(key)
    assert backend.holds(key)
    copy = await read_all(backend.storage, key)
    assert hashlib.sha256(copy).digest() == hashlib.sha256(data).digest()
    assert backend.leftovers() == [key]


async def test_empty_and_small_objects(backend: Backend) -> None:
    empty, small = new_key(), new_key()

    assert await backend.storage.save(empty, stream([])) == 0
    assert await backend.storage.save(small, stream([b"hello ", b"world"])) == 11

    assert await backend.storage.exists(empty)
    assert await read_all(backend.storage, empty) == b""
    assert await read_all(backend.storage, small) == b"hello world"


async def test_ranges(backend: Backend) -> None:
    data = os.urandom(3 * MiB + 5)
    key = new_key()
    await backend.storage.save(key, stream(uneven(data, [MiB])))
    chunk = 64 * 1024
    last = len(data) - 1

    async def read(start: int, end: int | None) -> bytes:
        return await read_all(backend.storage, key, start=start, end=end, chunk_size=chunk)

    assert await read(0, 0) == data[:1]
    assert await read(1000, 200_000) == data[1000:200_001]
    assert await read(last - 99, None) == data[-100:]
    assert await read(last, last) == data[-1:]
    assert await read(chunk - 10, 3 * chunk + 10) == data[chunk - 10 : 3 * chunk + 11]
    assert await read(0, None) == data
    # Past the end, as HTTP clamps it.
    assert await read(last - 4, last + 100) == data[-5:]
    assert await read(len(data), None) == b""


async def test_bad_ranges_and_missing_keys_are_refused(backend: Backend) -> None:
    key = new_key()
    await backend.storage.save(key, stream([b"0123456789"]))

    for start, end in [(-1, None), (5, 4)]:
        with pytest.raises(ValueError, match="bad range"):
            await read_all(backend.storage, key, start=start, end=end)
    with pytest.raises(FileNotFoundError):
        await read_all(backend.storage, new_key())


@pytest.mark.parametrize("fail_after", [1, 2], ids=["before-a-part", "after-a-part"])
async def test_a_stream_that_fails_midway_leaves_nothing(backend: Backend, fail_after: int) -> None:
    # 5 MiB is under one S3 part; at 10 MiB S3Storage has started a multipart upload.
    assert 5 * MiB < PART_SIZE <= 10 * MiB
    key = new_key()

    with pytest.raises(TooLarge):
        await backend.storage.save(key, stream([os.urandom(5 * MiB)] * 3, fail_after=fail_after))

    assert backend.leftovers() == []
    assert not await backend.storage.exists(key)


async def test_a_cancelled_save_leaves_nothing(backend: Backend) -> None:
    key = new_key()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(9 * MiB)
        await anyio.sleep_forever()
        yield b"never"

    with anyio.move_on_after(0.5) as scope:
        await backend.storage.save(key, stalls())

    assert scope.cancelled_caught
    assert backend.leftovers() == []


async def test_delete_removes_the_bytes_and_is_idempotent(backend: Backend) -> None:
    key, other = new_key(), new_key()
    await backend.storage.save(key, stream([b"secret", b" bytes"]))
    await backend.storage.save(other, stream([b"kept"]))
    assert backend.holds(key)

    await backend.storage.delete(key)
    await backend.storage.delete(key)

    assert not backend.holds(key)
    assert not await backend.storage.exists(key)
    with pytest.raises(FileNotFoundError):
        await read_all(backend.storage, key)
    assert await read_all(backend.storage, other) == b"kept"


@pytest.mark.parametrize("key", ESCAPING_KEYS)
async def test_keys_cannot_escape_the_store(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        await backend.storage.save(key, stream([b"x"]))
    with pytest.raises(ValueError, match="not a storage key"):
        await read_all(backend.storage, key)
    with pytest.raises(ValueError, match="not a storage key"):
        await backend.storage.delete(key)
    with pytest.raises(ValueError, match="not a storage key"):
        await backend.storage.exists(key)
    assert backend.leftovers() == []


@pytest.mark.parametrize("size", [MiB, PART_SIZE + MiB], ids=["put", "multipart"])
async def test_s3_objects_are_encrypted_at_rest(s3_server: S3Server, size: int) -> None:
    storage = s3_server.storage("sse")
    key = new_key()

    await storage.save(key, stream(uneven(os.urandom(size), [MiB])))

    head = s3_server.client.head_object(Bucket=BUCKET, Key=f"sse/{key}")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentLength"] == size


async def test_a_failing_store_raises_and_keeps_nothing(s3_server: S3Server) -> None:
    storage = s3_server.storage("p", bucket="no-such-bucket")

    with pytest.raises(ClientError, match="NoSuchBucket"):
        await storage.save(new_key(), stream([os.urandom(PART_SIZE), b"tail"]))

    assert s3_server.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


async def test_ping(backend: Backend) -> None:
    await backend.storage.ping()


async def test_ping_fails_when_the_store_is_gone(tmp_path: Path, s3_server: S3Server) -> None:
    local = LocalStorage(tmp_path / "files")
    (tmp_path / "files").rmdir()

    with pytest.raises(OSError, match="not a writable directory"):
        await local.ping()
    with pytest.raises(ClientError):
        await s3_server.storage("p", bucket="no-such-bucket").ping()


@pytest.mark.parametrize("umask", [0, 0o022], ids=["umask-000", "umask-022"])
async def test_local_files_are_private_and_not_executable(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        storage = LocalStorage(tmp_path / "files")
        key = new_key()
        await storage.save(key, stream([b"#!/bin/sh\necho hi\n"]))
    finally:
        os.umask(previous)

    path = tmp_path / "files" / key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The store and its shard directories are private too.
    for directory in [path.parent, path.parent.parent, tmp_path / "files"]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_new_keys_are_unique_and_well_formed() -> None:
    keys = [new_key() for _ in range(2000)]

    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{2}/[A-Za-z0-9_-]{2}/[A-Za-z0-9_-]{28}", key)
        assert check_key(key) == key


def test_storage_from_url_builds_each_backend(tmp_path: Path) -> None:
    root = tmp_path / "var" / "my files"

    local = storage_from_url(root.as_uri())
    s3 = storage_from_url(
        "s3://cmschat-files/prod/attachments/",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_region=REGION,
        s3_access_key=ACCESS_KEY,
        s3_secret_key=SECRET_KEY,
    )
    bare = storage_from_url("s3://cmschat-files")

    assert isinstance(local, LocalStorage)
    assert local.root == root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix) == ("cmschat-files", "prod/attachments/")
    assert isinstance(bare, S3Storage)
    assert bare.prefix == ""


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/srv/cmschat/files",
        "relative/files",
        "file:relative",
        "file://server/share/files",
        "file:///srv/files?mode=777",
        "ftp://example.com/files",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket/x",
        "s3://AKIAEXAMPLE:hunter2-secret@bucket/x",
    ],
)
def test_storage_from_url_refuses_other_urls(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^CMSCHAT_STORAGE_URL: ") as caught:
        storage_from_url(url)
    assert "hunter2" not in caught.value.message


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise LookupError(field)


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM, so earlier tests' peaks do not hide this one's.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
async def test_a_200_mib_save_and_read_stay_in_bounded_memory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    key = new_key()
    written, read_back = hashlib.sha256(), hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        for index in range(200):
            chunk = index.to_bytes(4, "big") * (MiB // 4)
            written.update(chunk)
            yield chunk

    _reset_peak_rss()
    before = _status_kib("VmRSS")
    tracemalloc.start()
    try:
        size = await storage.save(key, generated())
        async for chunk in storage.read(key):
            read_back.update(chunk)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = (_status_kib("VmHWM") - before) * 1024

    assert size == 200 * MiB
    assert read_back.digest() == written.digest()
    assert python_peak < 32 * MiB, python_peak
    assert rss_growth < 32 * MiB, rss_growth
