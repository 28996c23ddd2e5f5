"""Attachments through the API: safe uploads, permission-checked downloads, erasure."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from cmschat.app import create_app
from cmschat.attachments.erasure import clean_up
from cmschat.attachments.models import Attachment
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.settings import Settings
from tests.s3server import BUCKET, S3Server
from tests.support import NamedUser, error_of

PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64


def multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one ``file`` field, and its content type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    body = head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], room: int, filename: str, content: bytes
) -> httpx.Response:
    body, content_type = multipart(filename, content)
    return await client.post(
        f"/api/v1/rooms/{room}/attachments",
        content=body,
        headers=headers | {"Content-Type": content_type},
    )


async def room_of(client: httpx.AsyncClient, owner: dict[str, str], *members: NamedUser) -> int:
    response = await client.post(
        "/api/v1/rooms",
        headers=owner,
        json={"kind": "group", "name": "files", "member_ids": [m.id for m in members]},
    )
    room_id: int = response.json()["id"]
    return room_id


def stored_files(context: AppContext) -> list[Path]:
    root = Path(context.settings.storage_url.removeprefix("file://"))
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def rows(context: AppContext) -> int:
    async with context.db.unit_of_work("system:test") as session:
        return int(await session.scalar(select(func.count()).select_from(Attachment)) or 0)


async def test_upload_and_download_by_a_room_member(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await room_of(client, a, bob)
    response = await upload(client, a, room, "회의록 2026.pdf", PDF)
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["filename"] == "회의록 2026.pdf" and meta["size"] == len(PDF)
    assert meta["content_type"] == "application/pdf" and not meta["is_image"]
    import hashlib

    assert meta["sha256"] == hashlib.sha256(PDF).hexdigest()
    sent = await client.post(
        f"/api/v1/rooms/{room}/messages",
        headers=a,
        json={"content": "minutes", "attachment_ids": [meta["id"]]},
    )
    assert sent.status_code == 201, sent.text
    download = await client.get(f"/api/v1/attachments/{meta['id']}", headers=b)
    assert download.status_code == 200 and download.content == PDF
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Security-Policy"].startswith("sandbox")
    assert download.headers["ETag"] == f'"{meta["sha256"]}"'
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%ED%9A%8C%EC%9D%98%EB%A1%9D%202026.pdf" in disposition
    # Stored under a random key, private, not executable, outside any served path.
    (path,) = stored_files(context)
    assert "회의록" not in str(path) and "pdf" not in path.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_only_members_of_the_room_can_download(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, agent: NamedUser
) -> None:
    a, b, outsider = (await alice.login(client), await bob.login(client), await agent.login(client))
    room = await room_of(client, a, bob)
    meta = (await upload(client, a, room, "plan.pdf", PDF)).json()
    for attachment_id in (meta["id"], meta["id"] + 1, 999_999):
        guess = await client.get(f"/api/v1/attachments/{attachment_id}", headers=outsider)
        assert guess.status_code == 404
    assert (await client.get(f"/api/v1/attachments/{meta['id']}")).status_code == 401
    await client.delete(f"/api/v1/rooms/{room}/members/{bob.id}", headers=a)
    assert (await client.get(f"/api/v1/attachments/{meta['id']}", headers=b)).status_code == 404
    outsider_upload = await upload(client, outsider, room, "x.pdf", PDF)
    assert outsider_upload.status_code == 404


async def test_ranges_and_conditional_requests(client: httpx.AsyncClient, alice: NamedUser) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    data = b"0123456789" * 1000
    meta = (await upload(client, a, room, "digits.txt", data)).json()
    url = f"/api/v1/attachments/{meta['id']}"
    first = await client.get(url, headers=a | {"Range": "bytes=0-9"})
    assert first.status_code == 206 and first.content == b"0123456789"
    assert first.headers["Content-Range"] == f"bytes 0-9/{len(data)}"
    suffix = await client.get(url, headers=a | {"Range": "bytes=-5"})
    assert suffix.status_code == 206 and suffix.content == data[-5:]
    middle = await client.get(url, headers=a | {"Range": "bytes=4095-4100"})
    assert middle.content == data[4095:4101]
    beyond = await client.get(url, headers=a | {"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    cached = await client.get(url, headers=a | {"If-None-Match": f'"{meta["sha256"]}"'})
    assert cached.status_code == 304 and cached.content == b""


@pytest.mark.parametrize(
    ("filename", "content", "status", "phrase"),
    [
        ("setup.exe", b"MZ" + b"\x00" * 100, 415, ".exe"),
        ("report.pdf", ELF, 415, "whatever its name"),
        ("notes.txt", b"#!/bin/sh\nrm -rf /\n", 415, "whatever its name"),
        ("avatar.jpg.php", b"\xff\xd8\xff\xe0", 415, "php"),
        ("shell.php.jpg", b"\xff\xd8\xff\xe0", 415, "php"),
        ("page.html", b"<html><script>alert(1)</script>", 415, "html"),
        ("logo.png", b'<svg onload="alert(1)"/>', 415, "SVG"),
        ("..", PDF, 422, ""),
        ("a/../../etc/passwd.pdf", PDF, 422, ""),
        ("evil\u202egpj.exe", PDF, 422, ""),
        ("empty.pdf", b"", 422, "empty"),
        ("photo.jpg", PDF, 415, "PDF"),
    ],
)
async def test_refused_uploads_say_why_and_leave_nothing(
    client: httpx.AsyncClient,
    alice: NamedUser,
    context: AppContext,
    filename: str,
    content: bytes,
    status: int,
    phrase: str,
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    response = await upload(client, a, room, filename, content)
    assert response.status_code == status, response.text
    assert phrase.lower() in error_of(response)["message"].lower()
    assert stored_files(context) == [] and await rows(context) == 0


async def test_size_limit_and_quota_are_413_with_the_limit(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    context.attachment_limits = type(context.attachment_limits)(
        max_file_bytes=1 << 20,
        quota_bytes=(1 << 20) + 100,
        allowed_extensions=context.attachment_limits.allowed_extensions,
    )
    too_big = await upload(client, a, room, "big.txt", b"x" * ((1 << 20) + 1))
    assert too_big.status_code == 413 and "1 MiB" in error_of(too_big)["message"]
    assert stored_files(context) == [] and await rows(context) == 0
    assert (await upload(client, a, room, "ok.txt", b"y" * (1 << 20))).status_code == 201
    over_quota = await upload(client, a, room, "more.txt", b"z" * 200)
    assert over_quota.status_code == 413 and "quota" in error_of(over_quota)["message"]
    assert len(stored_files(context)) == 1 and await rows(context) == 1


async def test_concurrent_uploads_never_exceed_the_quota_together(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    """Each upload checks the quota when it is finished; sixteen finishing at once must
    not each see the others' bytes as not yet there (ASVS 2.3.4)."""
    a = await alice.login(client)
    room = await room_of(client, a)
    context.attachment_limits = type(context.attachment_limits)(
        max_file_bytes=1 << 20,
        quota_bytes=2500,
        allowed_extensions=context.attachment_limits.allowed_extensions,
    )
    answers = await asyncio.gather(
        *(upload(client, a, room, f"part{n}.txt", b"q" * 1000) for n in range(16))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201, 201] + [413] * 14, statuses
    async with context.db.unit_of_work() as session:
        used = await session.scalar(select(func.sum(Attachment.size)))
    assert used == 2000
    assert len(stored_files(context)) == 2


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 40.0)}  # GPS
    exif[0x0112] = 6  # rotated: stored sideways
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


async def test_photos_lose_their_metadata_but_stay_upright(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    original = jpeg_with_gps()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
    meta = (await upload(client, a, room, "IMG_0001.jpg", original)).json()
    assert meta["is_image"] and meta["content_type"] == "image/jpeg"
    stored = (await client.get(f"/api/v1/attachments/{meta['id']}", headers=a)).content
    cleaned = Image.open(io.BytesIO(stored))
    assert not cleaned.getexif() and b"SpyCam" not in stored
    assert cleaned.size == (48, 64)  # the orientation was applied, then dropped
    inline = await client.get(f"/api/v1/attachments/{meta['id']}?disposition=inline", headers=a)
    assert inline.headers["Content-Disposition"].startswith("inline;")


async def test_non_images_are_never_shown_inline(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    meta = (await upload(client, a, room, "doc.pdf", PDF)).json()
    response = await client.get(f"/api/v1/attachments/{meta['id']}?disposition=inline", headers=a)
    assert response.headers["Content-Disposition"].startswith("attachment;")


async def test_messages_carry_their_files_and_deleting_erases_them(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await room_of(client, a, bob)
    first = (await upload(client, a, room, "one.pdf", PDF)).json()
    second = (await upload(client, a, room, "two.txt", b"hello")).json()
    sent = await client.post(
        f"/api/v1/rooms/{room}/messages",
        headers=a,
        json={"content": "", "attachment_ids": [first["id"], second["id"]]},
    )
    assert sent.status_code == 201, sent.text
    assert [f["filename"] for f in sent.json()["attachments"]] == ["one.pdf", "two.txt"]
    history = (await client.get(f"/api/v1/rooms/{room}/messages", headers=b)).json()
    assert history["items"][0]["attachments"][1]["size"] == 5
    again = await client.post(
        f"/api/v1/rooms/{room}/messages",
        headers=a,
        json={"content": "reuse", "attachment_ids": [first["id"]]},
    )
    assert again.status_code == 422 and error_of(again)["field"] == "attachment_ids"
    assert len(stored_files(context)) == 2
    deleted = await client.delete(f"/api/v1/messages/{sent.json()['id']}", headers=a)
    assert deleted.status_code == 200 and deleted.json()["attachments"] == []
    assert stored_files(context) == [] and await rows(context) == 0
    gone = await client.get(f"/api/v1/attachments/{first['id']}", headers=b)
    assert gone.status_code == 404


async def test_files_can_only_be_sent_by_their_uploader_in_their_room(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await room_of(client, a, bob)
    other_room = await room_of(client, a, bob)
    mine = (await upload(client, a, room, "mine.pdf", PDF)).json()
    for headers, target in ((b, room), (a, other_room)):
        response = await client.post(
            f"/api/v1/rooms/{target}/messages",
            headers=headers,
            json={"content": "look", "attachment_ids": [mine["id"]]},
        )
        assert response.status_code == 422, response.text
        history = (await client.get(f"/api/v1/rooms/{target}/messages", headers=a)).json()
        assert history["items"] == []


async def test_unlinked_uploads_are_cleaned_up_after_a_while(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext, clock: FakeClock
) -> None:
    from datetime import timedelta

    a = await alice.login(client)
    room = await room_of(client, a)
    await upload(client, a, room, "forgotten.pdf", PDF)
    kept = (await upload(client, a, room, "sent.pdf", PDF)).json()
    await client.post(
        f"/api/v1/rooms/{room}/messages",
        headers=a,
        json={"content": "here", "attachment_ids": [kept["id"]]},
    )
    ttl = timedelta(minutes=60)
    assert await clean_up(eraser=context.eraser, clock=clock, unlinked_after=ttl) == 0
    clock.advance(minutes=61)
    assert await clean_up(eraser=context.eraser, clock=clock, unlinked_after=ttl) == 1
    assert len(stored_files(context)) == 1 and await rows(context) == 1
    assert (await client.get(f"/api/v1/attachments/{kept['id']}", headers=a)).status_code == 200


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS; returns it in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_peak_kib()


def _rss_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # measured once
async def test_a_200_mib_upload_streams_in_bounded_memory(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    context.attachment_limits = type(context.attachment_limits)(
        max_file_bytes=256 << 20,
        quota_bytes=1 << 30,
        allowed_extensions=context.attachment_limits.allowed_extensions,
    )
    boundary = uuid.uuid4().hex
    size = 200 << 20
    block = os.urandom(1 << 20)

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.zip"\r\n\r\n'
        ).encode()
        yield b"PK\x03\x04" + block[4:]
        for _ in range(size // len(block) - 1):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    before = _reset_peak_rss()
    response = await client.post(
        f"/api/v1/rooms/{room}/attachments",
        content=body(),
        headers=a | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    growth_mib = (_rss_peak_kib() - before) / 1024
    assert response.status_code == 201, response.text
    assert response.json()["size"] == size
    assert growth_mib < 32, f"peak RSS grew {growth_mib:.0f} MiB for a 200 MiB upload"


async def test_on_s3_deleting_a_message_erases_the_object(
    settings: Settings, clock: FakeClock, s3_server: S3Server, alice: NamedUser
) -> None:
    prefix = uuid.uuid4().hex
    on_s3 = s3_server.settings_for(settings, prefix)
    app = create_app(on_s3, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            a = await alice.login(client)
            room = await room_of(client, a)
            meta = (await upload(client, a, room, "on-s3.pdf", PDF)).json()
            listed = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            (obj,) = listed["Contents"]
            body = s3_server.client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            assert body == PDF
            ranged = await client.get(
                f"/api/v1/attachments/{meta['id']}", headers=a | {"Range": "bytes=1-3"}
            )
            assert ranged.content == PDF[1:4]
            sent = await client.post(
                f"/api/v1/rooms/{room}/messages", headers=a, json={"attachment_ids": [meta["id"]]}
            )
            await client.delete(f"/api/v1/messages/{sent.json()['id']}", headers=a)
            listed = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            assert listed.get("KeyCount", 0) == 0
            assert (await client.get("/readyz")).json()["checks"]["storage"] == "ok"


@pytest.mark.parametrize(
    "body",
    [
        b"--B\r\n-1.0363824608669739e-62--B--\r\n",
        b'--B\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--B--\r\n',
        b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a file\r\n--B--\r\n',
        b"",
    ],
)
async def test_malformed_multipart_bodies_are_422(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext, body: bytes
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    response = await client.post(
        f"/api/v1/rooms/{room}/attachments",
        content=body,
        headers=a | {"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "file"
    assert await rows(context) == 0
