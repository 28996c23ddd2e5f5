"""Upload inspection: which names and bytes a user may upload, and what they are told if not."""

from __future__ import annotations

import io
import struct
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from cmschat.attachments.inspection import (
    ALLOWED_EXTENSIONS,
    ALWAYS_REFUSED,
    Sniffed,
    check_content,
    check_extension,
    clean_filename,
    sniff,
)
from cmschat.errors import Invalid, UnsupportedType
from tests.support import required_file_missing

UPLOAD_PAYLOADS = Path(__file__).resolve().parents[1] / "data" / "upload"
OOXML = "application/vnd.openxmlformats-officedocument."


def shared(name: str) -> Path:
    """A file from the shared payload collection, or a skip saying where it was looked for."""
    path = UPLOAD_PAYLOADS / name
    if not path.is_file():
        required_file_missing(path, "a shared upload payload is missing")
    return path


def extension_list(name: str) -> list[str]:
    """The entries of a shared extension list (CRLF lines like ``.php5`` or ``.aspx;1.jpg``)."""
    return [line.strip() for line in shared(name).read_text().splitlines() if line.strip()]


def image(kind: str) -> bytes:
    """A real 2x2 image encoded by Pillow."""
    out = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 30, 30)).save(out, kind)
    return out.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    """A real ZIP archive holding ``files``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    """The start of an ISO media file (MP4, MOV, M4A, HEIC, AVIF) with these brands."""
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + b"\x00\x00\x00\x08free"


def tar_archive() -> bytes:
    """A real (POSIX ustar) tar archive with one small file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n%%EOF\n"
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
DOCX = zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"})
PNG = image("PNG")
MATROSKA = "video/x-matroska"
SEVEN_ZIP = b"7z\xbc\xaf\x27\x1c\x00\x04"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 57
PE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 52 + b"\x80\x00\x00\x00" + b"PE\x00\x00"


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("회의록 2026.pdf", "회의록 2026.pdf"),
        (unicodedata.normalize("NFD", "회의록 2026.pdf"), "회의록 2026.pdf"),  # as macOS sends it
        ("  사진 (1).JPG \n", "사진 (1).JPG"),
        ("report.final.v2.docx", "report.final.v2.docx"),
        ("a" * 251 + ".pdf", "a" * 251 + ".pdf"),  # exactly 255 bytes
        ("CONTRACT.pdf", "CONTRACT.pdf"),  # only the bare device names are reserved
    ],
)
def test_ordinary_names_pass_normalised(raw: str, cleaned: str) -> None:
    assert clean_filename(raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("", "empty"),
        ("   \t", "empty"),
        ("photo\x00.jpg", "NUL"),
        ("photo\x07.jpg", "control character"),
        ("report\u202egpj.exe", "control character (U+202E)"),  # bidi override: shows "exe.jpg"
        ("photo\u200b.jpg", "control character"),
        ("two\nlines.txt", "control character"),
        ("a" * 252 + ".pdf", "longer than 255 bytes"),
        ("가" * 84 + ".pdf", "longer than 255 bytes"),
        ("../../etc/passwd", "/ or \\"),
        ("dir/photo.jpg", "/ or \\"),
        ("C:\\Windows\\photo.jpg", "/ or \\"),
        ("shell.asp;.jpg", "must not contain any of"),
        ("shell.asp:.jpg", "must not contain any of"),
        (".", "start with a dot"),
        ("..", "start with a dot"),
        (".htaccess", "start with a dot"),
        (".hidden.jpg", "start with a dot"),
        ("photo.jpg.", "end in a dot"),
        ("shell.php .", "end in a dot"),
        ("CON", "reserved for a device"),
        ("con.txt", "reserved for a device"),
        ("Aux.tar.gz", "reserved for a device"),
        ("NUL .pdf", "reserved for a device"),
        ("COM1.jpg", "reserved for a device"),
        ("lpt9.png", "reserved for a device"),
    ],
)
def test_harmful_names_are_refused_with_a_reason(raw: str, phrase: str) -> None:
    with pytest.raises(Invalid) as refused:
        clean_filename(raw)
    assert refused.value.field == "file"
    assert phrase in refused.value.message


# ---------------------------------------------------------------- extensions


DEFAULT_ALLOWED = (
    "pdf txt md csv rtf odt ods odp doc docx xls xlsx ppt pptx hwp hwpx "
    "png jpg jpeg gif webp bmp heic avif mp3 m4a ogg oga wav flac aac "
    "mp4 m4v mov webm mkv avi zip 7z gz tgz tar rar"
)


def test_the_default_allow_list_is_documents_media_and_archives_only() -> None:
    assert set(DEFAULT_ALLOWED.split()) == ALLOWED_EXTENSIONS
    assert not ALLOWED_EXTENSIONS & ALWAYS_REFUSED


@pytest.mark.parametrize(
    ("name", "extension"),
    [
        ("회의록 2026.pdf", "pdf"),
        ("Photo.JPG", "jpg"),
        ("backup.tar.gz", "gz"),
        ("v1.2.docx", "docx"),
    ],
)
def test_allowed_names_give_their_extension(name: str, extension: str) -> None:
    assert check_extension(name) == extension


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("setup.exe", "files of type .exe are not allowed"),
        ("deploy.sh", "files of type .sh are not allowed"),
        ("page.HTML", "files of type .html are not allowed"),
        ("logo.svg", "files of type .svg are not allowed"),
        ("app.mjs", "files of type .mjs are not allowed"),
        ("data.xml", "files of type .xml are not allowed"),
        ("drawing.dwg", "files of type .dwg are not allowed here"),
        ("README", "no extension"),
        ("x.php.jpg", "contains .php"),
        ("x.PhP.jpg", "contains .php"),
        ("invoice.pdf.exe", "files of type .exe"),
        ("x.jpg.php", "files of type .php"),
        ("a.php5.png", "contains .php5"),
        ("shell.asp;.jpg", "contains .asp"),
        ("x.php%00.jpg", "contains .php"),
        ("x.php\x00.jpg", "contains .php"),
        ("x.\uff50\uff48\uff50.jpg", "contains .php"),  # fullwidth letters
        ("x.exe .zip", "contains .exe"),
    ],
)
def test_refused_extensions_say_why(name: str, phrase: str) -> None:
    with pytest.raises(UnsupportedType) as refused:
        check_extension(name)
    assert phrase in refused.value.message


def test_programs_stay_refused_even_if_an_operator_allows_them() -> None:
    allowed = ALLOWED_EXTENSIONS | ALWAYS_REFUSED
    for extension in sorted(ALWAYS_REFUSED):
        for name in (f"file.{extension}", f"file.{extension}.jpg", f"file.jpg.{extension}"):
            with pytest.raises(UnsupportedType):
                check_extension(name, allowed=allowed)


def test_operator_additions_are_honoured() -> None:
    assert check_extension("plan.dwg", allowed=ALLOWED_EXTENSIONS | {"dwg"}) == "dwg"
    with pytest.raises(UnsupportedType):
        check_extension("photo.jpg", allowed=frozenset({"pdf"}))


def test_harmless_inner_dots_are_fine() -> None:
    for name in ("2026.01.15 minutes.pdf", "photo.backup.jpg", "site.tar.gz", "v1.0.0.zip"):
        check_extension(name)


@pytest.mark.parametrize("list_name", ["php-extensions.lst", "asp-extensions.lst"])
def test_every_shared_server_script_extension_is_refused(list_name: str) -> None:
    entries = extension_list(list_name)
    assert entries, f"{list_name} is empty"
    for entry in entries:
        # The lists spell NUL both as "%00" and as a literal "\x00"; try the real byte as well.
        for suffix in {entry, entry.replace("\\x00", "\x00").replace("%00", "\x00")}:
            for name in (f"shell{suffix}", f"shell{suffix}.jpg", f"shell{suffix}.png"):
                with pytest.raises(UnsupportedType):
                    check_extension(name)
                with pytest.raises((Invalid, UnsupportedType)):
                    check_extension(clean_filename(name))


# ---------------------------------------------------------------- content


@pytest.mark.parametrize("payload", ["SVG_XSS1.svg", "SVG_XSS2.svg", "SVG_XSS3.svg", "xss.html"])
def test_shared_xss_files_are_refused_under_any_name(payload: str) -> None:
    content = shared(payload).read_bytes()
    with pytest.raises(UnsupportedType, match="not allowed"):
        check_extension(payload)
    with pytest.raises(UnsupportedType, match="not allowed"):
        check_content(payload, content)
    stem = payload.rsplit(".", 1)[0]
    for name in (f"{stem}.png", f"{stem}.txt", f"{stem}.pdf"):
        with pytest.raises(UnsupportedType) as refused:
            check_content(name, content)
        assert "whatever its name" in refused.value.message
        assert ("SVG" if payload.endswith(".svg") else "browser script") in refused.value.message


def test_a_zip_with_a_symlink_inside_is_still_a_zip() -> None:
    # Symlinks inside archives are the download side's concern; here it is just an archive.
    content = shared("symlink-etc_passwd.zip").read_bytes()
    assert check_extension("symlink-etc_passwd.zip") == "zip"
    assert sniff(content) == Sniffed("application/zip", "archive")
    assert check_content("symlink-etc_passwd.zip", content) == Sniffed("application/zip", "archive")


PROGRAMS = [
    pytest.param(ELF, "a Linux program", id="elf"),
    pytest.param(PE, "a Windows program", id="pe"),
    pytest.param(b"\xcf\xfa\xed\xfe\x07\x00\x00\x01", "a macOS program", id="macho64"),
    pytest.param(b"\xfe\xed\xfa\xce\x00\x00\x00\x12", "a macOS program", id="macho32-be"),
    pytest.param(b"\xca\xfe\xba\xbe\x00\x00\x00\x34", "a macOS program or Java", id="fat-or-class"),
    pytest.param(b"#!/bin/sh\nrm -rf ~\n", "a script", id="shebang"),
]


@pytest.mark.parametrize("name", ["photo.jpg", "notes.txt", "report.pdf", "archive.zip"])
@pytest.mark.parametrize(("content", "what"), PROGRAMS)
def test_programs_are_refused_whatever_their_name(name: str, content: bytes, what: str) -> None:
    with pytest.raises(UnsupportedType) as refused:
        check_content(name, content)
    assert f"the content is {what}" in refused.value.message
    assert "whatever its name" in refused.value.message


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"<!DOCTYPE html><p>hi", "web page"),
        (b"\xef\xbb\xbf \r\n\t<HTML><body>", "web page"),
        (b"<body onload=alert(1)>", "web page"),
        (b"<iframe src=//evil>", "web page"),
        (b"<ScRiPt>alert(1)</script>", "browser script"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "SVG"),
        (b'<?xml version="1.0"?><x:script xmlns:x="http://www.w3.org/1999/xhtml"/>', "XML"),
        (b"<?php system($_GET['c']);", "PHP"),
        (b"<% Response.Write(1) %>", "ASP or JSP"),
        (PNG + b"<?php system($_GET['c']); ?>", "PHP code"),
        (PDF + b"%binary <?PHP `id` ?>", "PHP code"),
    ],
)
def test_active_content_is_refused_even_inside_allowed_files(content: bytes, phrase: str) -> None:
    for name in ("notes.txt", "photo.png", "report.pdf"):
        with pytest.raises(UnsupportedType) as refused:
            check_content(name, content)
        assert phrase in refused.value.message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("사진.png", PNG, Sniffed("image/png", "image")),
        ("photo.jpg", image("JPEG"), Sniffed("image/jpeg", "image")),
        ("anim.gif", image("GIF"), Sniffed("image/gif", "image")),
        ("pic.webp", image("WEBP"), Sniffed("image/webp", "image")),
        ("scan.bmp", image("BMP"), Sniffed("image/bmp", "image")),
        ("pic.avif", image("AVIF"), Sniffed("image/avif", "image")),
        ("phone.heic", ftyp(b"heic", b"mif1", b"heic"), Sniffed("image/heic", "image")),
        ("phone.heic", ftyp(b"mif1", b"mif1", b"heic"), Sniffed("image/heic", "image")),
        ("회의록 2026.pdf", PDF, Sniffed("application/pdf", "document")),
        ("memo.rtf", b"{\\rtf1\\ansi hello}", Sniffed("application/rtf", "document")),
        ("files.zip", zipped({"a.txt": b"a"}), Sniffed("application/zip", "archive")),
        ("empty.zip", b"PK\x05\x06" + b"\x00" * 18, Sniffed("application/zip", "archive")),
        ("report.docx", DOCX, Sniffed(OOXML + "wordprocessingml.document", "document")),
        ("sheet.xlsx", DOCX, Sniffed(OOXML + "spreadsheetml.sheet", "document")),
        ("text.odt", DOCX, Sniffed("application/vnd.oasis.opendocument.text", "document")),
        ("보고서.hwpx", DOCX, Sniffed("application/hwp+zip", "document")),
        ("old.doc", OLE, Sniffed("application/msword", "document")),
        ("보고서.hwp", OLE, Sniffed("application/x-hwp", "document")),
        ("backup.tar", tar_archive(), Sniffed("application/x-tar", "archive")),
        ("backup.tgz", b"\x1f\x8b\x08\x00" + b"\x00" * 6, Sniffed("application/gzip", "archive")),
        ("files.7z", SEVEN_ZIP, Sniffed("application/x-7z-compressed", "archive")),
        ("files.rar", b"Rar!\x1a\x07\x01\x00", Sniffed("application/vnd.rar", "archive")),
        ("song.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00", Sniffed("audio/mpeg", "audio")),
        ("song.mp3", b"\xff\xfb\x90\x64" + b"\x00" * 8, Sniffed("audio/mpeg", "audio")),
        ("song.aac", b"\xff\xf1\x50\x80\x02\x1f\xfc", Sniffed("audio/aac", "audio")),
        ("song.ogg", b"OggS\x00\x02" + b"\x00" * 8, Sniffed("audio/ogg", "audio")),
        ("song.flac", b"fLaC\x00\x00\x00\x22", Sniffed("audio/flac", "audio")),
        ("song.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", Sniffed("audio/wav", "audio")),
        ("song.m4a", ftyp(b"M4A ", b"M4A ", b"mp42"), Sniffed("audio/mp4", "audio")),
        ("clip.mp4", ftyp(b"isom", b"isom", b"mp41"), Sniffed("video/mp4", "video")),
        ("hevc.mp4", ftyp(b"mp42", b"isom", b"hevc"), Sniffed("video/mp4", "video")),
        ("clip.mov", ftyp(b"qt  ", b"qt  "), Sniffed("video/quicktime", "video")),
        ("clip.webm", b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm", Sniffed("video/webm", "video")),
        ("clip.mkv", b"\x1a\x45\xdf\xa3\x42\x82\x88matroska", Sniffed(MATROSKA, "video")),
        ("clip.avi", b"RIFF\x24\x00\x00\x00AVI LIST", Sniffed("video/x-msvideo", "video")),
    ],
)
def test_real_files_pass_with_their_type(name: str, content: bytes, expected: Sniffed) -> None:
    assert check_content(name, content) == expected


@pytest.mark.parametrize(
    ("name", "content", "content_type"),
    [
        ("notes.txt", "회의록: 다음 주 월요일\n".encode(), "text/plain; charset=utf-8"),
        ("notes.md", b"# Title\n\n<p align=center>logo</p>\n", "text/markdown; charset=utf-8"),
        ("table.csv", "이름,점수\n홍길동,90\n".encode(), "text/csv; charset=utf-8"),
        ("empty.txt", b"", "text/plain; charset=utf-8"),
        ("bom.csv", b"\xef\xbb\xbfa,b\n", "text/csv; charset=utf-8"),
        # The head can end in the middle of a character; that is not an encoding error.
        ("long.txt", ("가" * 1366).encode()[:4096], "text/plain; charset=utf-8"),
    ],
)
def test_utf8_text_passes(name: str, content: bytes, content_type: str) -> None:
    assert check_content(name, content) == Sniffed(content_type, "text")


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("table.csv", "이름,점수\n".encode("cp949"), "is not UTF-8 text (save it as UTF-8)"),
        ("notes.txt", b"abc\x00def", "is not UTF-8 text"),
        ("notes.txt", PNG, "the file name ends in .txt but the content is a PNG image"),
    ],
)
def test_text_must_be_utf8_text(name: str, content: bytes, phrase: str) -> None:
    with pytest.raises(UnsupportedType) as refused:
        check_content(name, content)
    assert phrase in refused.value.message


def test_an_image_under_another_image_extension_is_served_as_what_it_is() -> None:
    # The rule: within images, audio and video the bytes decide the stored type (phones and
    # websites often mislabel); documents and archives must be the container their name says.
    assert check_content("photo.jpg", PNG) == Sniffed("image/png", "image")
    assert check_content("photo.png", image("WEBP")) == Sniffed("image/webp", "image")
    assert check_content("voice.m4a", ftyp(b"isom", b"isom")) == Sniffed("video/mp4", "video")


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("report.pdf", PNG, "the file name ends in .pdf but the content is a PNG image"),
        ("photo.jpg", PDF, "the file name ends in .jpg but the content is a PDF document"),
        ("report.docx", OLE, "ends in .docx but the content is an older Office or Hangul file"),
        ("old.doc", DOCX, "ends in .doc but the content is a ZIP archive"),
        ("files.zip", SEVEN_ZIP, "ends in .zip but the content is a 7-Zip"),
        ("song.mp3", PNG, "ends in .mp3 but the content is a PNG image"),
        ("photo.png", b"just some words", "ends in .png but the content is not an image"),
        ("photo.bmp", b"BM is not a bitmap", "is not an image"),
        ("report.pdf", b"\x00\x01\x02\x03", "is not a PDF document"),
        ("song.mp3", b"\xff\xff\xff\xff", "is not audio or video"),
    ],
)
def test_content_that_is_not_what_the_name_claims_is_refused(
    name: str, content: bytes, phrase: str
) -> None:
    with pytest.raises(UnsupportedType) as refused:
        check_content(name, content)
    assert phrase in refused.value.message


def test_empty_binary_files_are_refused_as_empty() -> None:
    with pytest.raises(Invalid, match="the file is empty") as refused:
        check_content("photo.png", b"")
    assert refused.value.field == "file"


def test_operator_added_types_are_stored_as_opaque_downloads() -> None:
    opaque = Sniffed("application/octet-stream", "document")
    assert check_content("plan.dwg", b"AC1032\x00\x00") == opaque
    assert check_content("plan.dwg", PNG).family != "image"  # never previewed: the name says dwg
    with pytest.raises(UnsupportedType, match="Windows program"):
        check_content("plan.dwg", PE)


def test_check_content_refuses_names_it_should_never_see() -> None:
    for name in ("README", "page.html", "run.exe", "x.php.txt"):
        with pytest.raises(UnsupportedType):
            check_content(name, b"hello")


def test_only_magic_bytes_make_an_image() -> None:
    assert sniff(b"") is None
    assert sniff(b"hello world") is None
    assert sniff(b"BMW service notes") is None
    assert sniff(b"\xff\xd8") is None  # too short to be sure of a JPEG
    assert sniff(b"RIFF\x00\x00\x00\x00XXXX") is None
    assert sniff(PNG) == Sniffed("image/png", "image")


def test_gif_blocks_are_filtered_losslessly_and_damage_is_refused() -> None:
    from PIL import Image as PILImage

    from cmschat.attachments.gif import strip_gif

    out = io.BytesIO()
    PILImage.new("P", (3, 2)).save(out, "GIF", comment=b"where I live")
    original = out.getvalue()
    cleaned = io.BytesIO()
    strip_gif(io.BytesIO(original[:-1]), cleaned)  # no trailer: still shown, trailer added
    assert b"where I live" not in cleaned.getvalue() and cleaned.getvalue().endswith(b";")
    assert PILImage.open(io.BytesIO(cleaned.getvalue())).size == (3, 2)
    for damaged in (original[:20], b"GIF89a" + b"\x00" * 7 + b"\x99", b"PNG" + original[3:]):
        with pytest.raises(Invalid, match="damaged"):
            strip_gif(io.BytesIO(damaged), io.BytesIO())
