"""Attachments keep their uploader's privacy: no metadata survives, drafts stay private."""

from __future__ import annotations

import io
import struct

import httpx
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from tests.api.test_attachments import PDF, room_of, upload
from tests.support import NamedUser

# Each secret sits in its own metadata segment; none may reach the stored file.
COMMENT = b"secret-comment-at-home"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    b'22-rdf-syntax-ns#"><rdf:Description>secret-xmp-author</rdf:Description></rdf:RDF>'
    b"</x:xmpmeta>"
)
IPTC_CAPTION = b"secret-iptc-caption"
CAMERA = "SpyCam-9000"
# Strings that mark a metadata segment of any kind, whatever its payload.
MARKERS = (
    COMMENT,
    b"secret-xmp-author",
    IPTC_CAPTION,
    CAMERA.encode(),
    b"http://ns.adobe.com/xap/1.0/",
    b"Photoshop 3.0",
    b"8BIM",
    b"Exif\x00\x00",
    b"tEXt",
    b"zTXt",
    b"iTXt",
    b"eXIf",
    b"EXIF",
    b"XMP ",
    b"XMP DataXMP",
    b"secret-after-the-trailer",
)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with_gps() -> Image.Exif:
    """EXIF naming a camera and the place the photo was taken."""
    exif = Image.Exif()
    exif[0x010F] = CAMERA  # Make
    exif[0x8825] = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 40.0)}  # GPS
    return exif


def app13_iptc() -> bytes:
    """A JPEG APP13 segment: a Photoshop image resource block holding an IPTC caption."""
    dataset = b"\x1c\x02\x78" + struct.pack(">H", len(IPTC_CAPTION)) + IPTC_CAPTION
    padded = dataset + b"\x00" * (len(dataset) % 2)
    resource = b"8BIM" + b"\x04\x04" + b"\x00\x00" + struct.pack(">I", len(dataset)) + padded
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def picture() -> Image.Image:
    return Image.new("RGB", (32, 24), (200, 30, 30))


def jpeg_with_everything() -> bytes:
    """A JPEG with a COM comment, APP1 EXIF (GPS) and XMP, APP2 ICC and APP13 IPTC."""
    out = io.BytesIO()
    picture().save(out, "JPEG", exif=exif_with_gps(), icc_profile=ICC, comment=COMMENT, xmp=XMP)
    data = out.getvalue()
    return data[:2] + app13_iptc() + data[2:]  # right after SOI


def png_with_everything() -> bytes:
    """A PNG with tEXt, zTXt, iTXt (XMP) and eXIf chunks, and an iCCP profile."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", COMMENT.decode())
    info.add_text("Author", "secret-iptc-caption", zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    out = io.BytesIO()
    picture().save(out, "PNG", pnginfo=info, exif=exif_with_gps(), icc_profile=ICC)
    return out.getvalue()


def webp_with_everything() -> bytes:
    """A WebP with EXIF and XMP chunks and an ICCP profile."""
    out = io.BytesIO()
    picture().save(out, "WEBP", exif=exif_with_gps(), xmp=XMP, icc_profile=ICC)
    return out.getvalue()


def gif_blocks(label: int, identifier: bytes, data: bytes) -> bytes:
    """A GIF extension block: introducer, label, then the data in sub-blocks of <= 255 bytes."""
    first = bytes([len(identifier)]) + identifier if identifier else b""
    chunks = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    return bytes([0x21, label]) + first + chunks + b"\x00"


def gif_with_everything() -> bytes:
    """A two-frame looping GIF with a comment, an XMP block, an ICC profile and a tail."""
    frames = [picture(), Image.new("RGB", (32, 24), (30, 30, 200))]
    out = io.BytesIO()
    frames[0].save(
        out, "GIF", save_all=True, append_images=frames[1:], loop=0, duration=100, comment=COMMENT
    )
    data = out.getvalue()
    table = 3 * 2 ** ((data[10] & 0x07) + 1) if data[10] & 0x80 else 0
    start = 13 + table  # after the header and global colour table: before any frame
    icc = gif_blocks(0xFF, b"ICCRGBG1012", ICC)
    xmp = gif_blocks(0xFF, b"XMP DataXMP", XMP)
    assert data.endswith(b"\x3b")
    return data[:start] + icc + xmp + data[start:] + b"secret-after-the-trailer"


def keeps_profile(data: bytes) -> bool:
    """Whether the image carries the ICC profile (Pillow does not read one from a GIF)."""
    if data.startswith(b"GIF"):
        return gif_blocks(0xFF, b"ICCRGBG1012", ICC) in data
    return bool(Image.open(io.BytesIO(data)).info.get("icc_profile") == ICC)


@pytest.mark.parametrize(
    ("filename", "build", "content_type"),
    [
        ("IMG_0001.jpg", jpeg_with_everything, "image/jpeg"),
        ("screenshot.png", png_with_everything, "image/png"),
        ("sticker.webp", webp_with_everything, "image/webp"),
        ("party.gif", gif_with_everything, "image/gif"),
    ],
)
async def test_images_lose_every_metadata_segment_but_their_colour_profile(
    client: httpx.AsyncClient,
    alice: NamedUser,
    filename: str,
    build: object,
    content_type: str,
) -> None:
    assert callable(build)
    original: bytes = build()
    # The fixture carries what it claims to (else the test would prove nothing).
    assert keeps_profile(original)
    present = [
        marker for marker in (COMMENT, b"secret-xmp-author", CAMERA.encode()) if marker in original
    ]
    assert len(present) >= 2, present
    a = await alice.login(client)
    room = await room_of(client, a)
    response = await upload(client, a, room, filename, original)
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["is_image"] and meta["content_type"] == content_type
    stored = (await client.get(f"/api/v1/attachments/{meta['id']}", headers=a)).content
    assert [marker for marker in MARKERS if marker in stored] == []
    cleaned = Image.open(io.BytesIO(stored))
    assert keeps_profile(stored)
    assert not cleaned.getexif() and "comment" not in cleaned.info and "xmp" not in cleaned.info
    assert cleaned.size == (32, 24)


async def test_animated_gifs_keep_their_frames_and_loop(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    a = await alice.login(client)
    room = await room_of(client, a)
    meta = (await upload(client, a, room, "party.gif", gif_with_everything())).json()
    stored = (await client.get(f"/api/v1/attachments/{meta['id']}", headers=a)).content
    cleaned = Image.open(io.BytesIO(stored))
    assert cleaned.n_frames == 2 and cleaned.info["loop"] == 0 and cleaned.info["duration"] == 100
    assert stored.endswith(b"\x3b") and b"NETSCAPE2.0" in stored


def test_the_jpeg_fixture_holds_each_segment() -> None:
    """COM, APP1 (EXIF and XMP), APP2 (ICC) and APP13 (IPTC) are all in the upload."""
    data = jpeg_with_everything()
    for marker in (b"\xff\xfe", b"Exif\x00\x00", b"http://ns.adobe.com/xap/1.0/", b"\xff\xed"):
        assert marker in data
    info = Image.open(io.BytesIO(data)).info
    assert info["comment"] == COMMENT and IPTC_CAPTION in data
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)


async def test_an_upload_is_its_uploaders_alone_until_it_is_sent(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room = await room_of(client, a, bob)
    draft = (await upload(client, a, room, "draft.pdf", PDF)).json()
    url = f"/api/v1/attachments/{draft['id']}"
    assert (await client.get(url, headers=a)).status_code == 200  # the uploader's preview
    assert (await client.get(url, headers=b)).status_code == 404  # a member: not yet sent
    assert (await client.get(url, headers=b | {"Range": "bytes=0-3"})).status_code == 404
    # Nobody else can send it either, which would make it visible.
    stolen = await client.post(
        f"/api/v1/rooms/{room}/messages",
        headers=b,
        json={"content": "mine now", "attachment_ids": [draft["id"]]},
    )
    assert stolen.status_code == 422, stolen.text
    assert (await client.get(url, headers=b)).status_code == 404
    sent = await client.post(
        f"/api/v1/rooms/{room}/messages",
        headers=a,
        json={"content": "the plan", "attachment_ids": [draft["id"]]},
    )
    assert sent.status_code == 201, sent.text
    shown = await client.get(url, headers=b)
    assert shown.status_code == 200 and shown.content == PDF
