"""Server-side upload checks: a safe name, an allowed extension, and bytes that match it.

The operations plan asks that executables be refused by checking files on the server, so
nothing here trusts the browser. Run ``clean_filename``, then ``check_extension`` (an
allow-list; programs stay refused even when an operator allows them or when they hide as an
inner extension, since some web servers run a file for any dot-part), then ``check_content``
(magic bytes decide; programs and browser-active markup are refused under any name).
Images, audio and video may be any format of the family their name claims (phones and sites
often mislabel) and are stored under the type the bytes prove; documents and archives must
be exactly the container their extension names, since the app the name picks opens them.

One module past 300 lines on purpose: the allow-list and the signatures that enforce it are
one security rule, reviewed together (docs/security.md, uploads).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from typing import NoReturn

from cmschat.errors import Invalid, UnsupportedType

# ---------------------------------------------------------------- tables

_PDF, _RTF, _OLE = "application/pdf", "application/rtf", "application/x-ole-storage"
_ZIP, _SEVEN_ZIP, _GZIP = "application/zip", "application/x-7z-compressed", "application/gzip"
_RAR, _TAR, _OCTET = "application/vnd.rar", "application/x-tar", "application/octet-stream"
_OOXML = "application/vnd.openxmlformats-officedocument."
_ODF = "application/vnd.oasis.opendocument."

# Every content type sniff() can report: family, how a user would name it, and the
# signatures at offset 0 that prove it (formats needing more than a prefix: see _sniff_type).
_KINDS: dict[str, tuple[str, str, tuple[bytes, ...]]] = {
    "image/png": ("image", "a PNG image", (b"\x89PNG\r\n\x1a\n",)),
    "image/jpeg": ("image", "a JPEG image", (b"\xff\xd8\xff",)),
    "image/gif": ("image", "a GIF image", (b"GIF87a", b"GIF89a")),
    "image/webp": ("image", "a WebP image", ()),
    "image/bmp": ("image", "a BMP image", ()),
    "image/heic": ("image", "a HEIC image", ()),
    "image/heif": ("image", "a HEIF image", ()),
    "image/avif": ("image", "an AVIF image", ()),
    _PDF: ("document", "a PDF document", (b"%PDF-",)),
    _RTF: ("document", "an RTF document", (b"{\\rtf",)),
    _OLE: ("document", "an older Office or Hangul file", (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",)),
    # Local file header, empty archive, spanned archive; docx, odt, hwpx, jar, apk are ZIPs too.
    _ZIP: ("archive", "a ZIP archive", (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")),
    _SEVEN_ZIP: ("archive", "a 7-Zip archive", (b"7z\xbc\xaf\x27\x1c",)),
    _GZIP: ("archive", "a gzip archive", (b"\x1f\x8b\x08",)),
    _RAR: ("archive", "a RAR archive", (b"Rar!\x1a\x07",)),
    _TAR: ("archive", "a tar archive", ()),
    "audio/mpeg": ("audio", "an MP3 audio file", (b"ID3",)),
    "audio/aac": ("audio", "an AAC audio file", ()),
    "audio/ogg": ("audio", "an Ogg audio file", (b"OggS",)),
    "audio/wav": ("audio", "a WAV audio file", ()),
    "audio/flac": ("audio", "a FLAC audio file", (b"fLaC",)),
    "audio/mp4": ("audio", "an MPEG-4 audio file", ()),
    "video/mp4": ("video", "an MPEG-4 video", ()),
    "video/quicktime": ("video", "a QuickTime video", ()),
    "video/webm": ("video", "a WebM video", ()),
    "video/x-matroska": ("video", "a Matroska video", ()),
    "video/x-msvideo": ("video", "an AVI video", ()),
}
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}

# Programs under any name: a user opening them runs code.
_PROGRAMS: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "a Linux program (ELF)"),
    (b"MZ", "a Windows program"),
    *((magic, "a macOS program") for magic in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf")),
    *((magic, "a macOS program") for magic in (b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")),
    # Both a universal macOS binary and a Java class file start like this; refuse either.
    (b"\xca\xfe\xba\xbe", "a macOS program or Java class file"),
    (b"\xca\xfe\xba\xbf", "a macOS program"),
    (b"#!", "a script (it starts with #!)"),
)
# Markup a browser would run if it were ever served inline; compared lower-cased.
_ACTIVE: tuple[tuple[bytes, str], ...] = (
    *((tag, "a web page (HTML)") for tag in (b"<!doctype html", b"<html", b"<body", b"<iframe")),
    (b"<script", "a browser script"),
    (b"<svg", "an SVG image, which can carry scripts"),
    (b"<?xml", "an XML document, which can carry scripts"),
    (b"<?php", "a PHP script"),
    (b"<%", "a server page (ASP or JSP)"),
)

# What each allowed extension promises: a family (any format of it will do) or one container.
_PROMISES: dict[str, str] = {
    **dict.fromkeys(("png", "jpg", "jpeg", "gif", "webp", "bmp", "heic", "avif"), "image"),
    **dict.fromkeys(("mp3", "m4a", "ogg", "oga", "wav", "flac", "aac"), "audio"),
    **dict.fromkeys(("mp4", "m4v", "mov", "webm", "mkv", "avi"), "video"),
    **dict.fromkeys(("txt", "md", "csv"), "text"),
    **dict.fromkeys(("docx", "xlsx", "pptx", "odt", "ods", "odp", "hwpx", "zip"), _ZIP),
    **dict.fromkeys(("doc", "xls", "ppt", "hwp"), _OLE),
    **dict.fromkeys(("gz", "tgz"), _GZIP),
    **{"pdf": _PDF, "rtf": _RTF, "7z": _SEVEN_ZIP, "rar": _RAR, "tar": _TAR},
}
# The type to store and serve when the extension says more than the container does.
_SERVE_AS: dict[str, str] = {
    "docx": _OOXML + "wordprocessingml.document",
    "xlsx": _OOXML + "spreadsheetml.sheet",
    "pptx": _OOXML + "presentationml.presentation",
    "odt": _ODF + "text",
    "ods": _ODF + "spreadsheet",
    "odp": _ODF + "presentation",
    "hwpx": "application/hwp+zip",
    "doc": "application/msword",
    "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint",
    "hwp": "application/x-hwp",
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
# Sound in a video container (an audio-only .webm, an .m4a branded "isom") is common.
_COMPATIBLE = {"image": {"image"}, "audio": {"audio", "video"}, "video": {"audio", "video"}}
_CLAIMS = {"image": "an image", "audio": "audio or video", "video": "a video"}

ALLOWED_EXTENSIONS: frozenset[str] = frozenset(_PROMISES)

# Programs, scripts and browser-active formats: refused even if an operator allows them.
_REFUSED_GROUPS = (
    "exe dll msi msp mst bat cmd com scr pif cpl sys drv reg lnk url scf inf ins chm hlp msc",
    "vb vbs vbe js jse mjs ws wsf wsh wsc sct hta gadget ps1 psm1 psd1 ps1xml",  # Windows hosts
    "application appx appxbundle msix msixbundle xbap",  # Windows installers
    "sh bash zsh ksh csh tcsh fish command desktop",  # Unix shells and launchers
    "php php2 php3 php4 php5 php6 php7 php8 phtml phtm pht phps phpt phar pgif inc",
    "asp aspx asa asax ascx ashx asmx axd cer config soap htaccess",  # IIS, Apache config
    "jsp jspx jspf cfm cfml cgi pl pm py pyc pyo pyw rb",  # other server-side scripts
    "jar war ear class apk app deb rpm dmg pkg",  # packages that install or run code
    "html htm xhtml xht shtml shtm stm mht mhtml svg svgz xml xsl xslt swf",  # browser-active
)
ALWAYS_REFUSED: frozenset[str] = frozenset(w for group in _REFUSED_GROUPS for w in group.split())

_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789¹²³"]
)
# Windows cannot store these; ";" and ":" also split names on IIS and NTFS (x.asp;.jpg).
_FORBIDDEN_CHARACTERS = '<>:"|?*;'
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, bidi overrides, line breaks
_MAX_NAME_BYTES = 255
_LEADING_WORD = re.compile(r"[a-z0-9]*")
_BLANK = b" \t\r\n\f\v"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Sniffed:
    """What the bytes proved: the content type to store and serve, and its family."""

    content_type: str
    family: str  # "image" | "document" | "audio" | "video" | "archive" | "text"


# ---------------------------------------------------------------- checks


def clean_filename(raw: str) -> str:
    """The NFC-normalised, stripped name, or Invalid (field "file") saying what is wrong."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        _bad_name("the file name is empty")
    if "\x00" in name:
        _bad_name("the file name contains a NUL byte")
    for char in name:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            _bad_name(f"the file name contains an invisible control character (U+{ord(char):04X})")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        _bad_name(f"the file name is longer than {_MAX_NAME_BYTES} bytes")
    if "/" in name or "\\" in name:
        _bad_name("the file name must not contain / or \\ (no folders)")
    if any(char in _FORBIDDEN_CHARACTERS for char in name):
        _bad_name("the file name must not contain any of " + " ".join(_FORBIDDEN_CHARACTERS))
    if name.startswith("."):
        _bad_name("the file name must not start with a dot (hidden files are not accepted)")
    if name.endswith("."):  # Windows drops it, turning "x.php." into "x.php"
        _bad_name("the file name must not end in a dot")
    if name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        _bad_name("the file name is reserved for a device on Windows; please rename it")
    return name


def check_extension(filename: str, *, allowed: frozenset[str] = ALLOWED_EXTENSIONS) -> str:
    """The lower-case final extension, or UnsupportedType when the name's type is refused."""
    if "." not in filename or filename.endswith("."):
        raise UnsupportedType("the file name has no extension, so its type cannot be checked")
    *inner, final = filename.split(".")[1:]
    extension = final.lower()
    # Web servers act on any dot-part and stop reading at ";", NUL or "%00", so each part is
    # judged by its leading letters and digits, after folding look-alikes (fullwidth letters).
    for part in inner:
        word = _leading_word(part)
        if word in ALWAYS_REFUSED:
            raise UnsupportedType(
                f"the file name contains .{word}, a type that can run as a program; "
                "rename the file without it"
            )
    word = _leading_word(final)
    if word in ALWAYS_REFUSED:
        raise UnsupportedType(
            f"files of type .{word} are not allowed, because they can run as programs or scripts"
        )
    if extension not in allowed:
        raise UnsupportedType(f"files of type .{extension} are not allowed here")
    return extension


def sniff(head: bytes) -> Sniffed | None:
    """The type the magic bytes at the start of a file prove, or None if none is known."""
    content_type = _sniff_type(head)
    return None if content_type is None else Sniffed(content_type, _KINDS[content_type][0])


def check_content(filename: str, head: bytes) -> Sniffed:
    """The type to store for these first bytes, or UnsupportedType if they are refused."""
    # Whatever the allow-list, the name's own refusals hold here too, for any caller.
    extension = check_extension(filename, allowed=frozenset({filename.rpartition(".")[2].lower()}))
    _refuse_active(head)
    sniffed = sniff(head)
    promise = _PROMISES.get(extension)
    if promise == "text":
        if b"\x00" not in head and _is_utf8(head):
            return Sniffed(_SERVE_AS[extension], "text")
        found = _KINDS[sniffed.content_type][1] if sniffed else "not UTF-8 text (save it as UTF-8)"
        raise UnsupportedType(f"the file name ends in .{extension} but the content is {found}")
    if promise is None:
        # An extension an operator added: nothing to compare with, so never served inline.
        return Sniffed(_OCTET, "document")
    if not head:
        raise Invalid("the file is empty", field="file")
    if promise == _TAR and sniffed is None:
        # Pre-POSIX tar archives carry no signature at all.
        return Sniffed(_OCTET, "archive")
    if sniffed is None or not (
        sniffed.content_type == promise or sniffed.family in _COMPATIBLE.get(promise, ())
    ):
        claim = _KINDS[promise][1] if promise in _KINDS else _CLAIMS[promise]
        found = f"is {_KINDS[sniffed.content_type][1]}" if sniffed else f"is not {claim}"
        raise UnsupportedType(f"the file name ends in .{extension} but the content {found}")
    if extension in _SERVE_AS:  # the container is generic; the extension names the document
        return Sniffed(_SERVE_AS[extension], "document")
    return sniffed


# ---------------------------------------------------------------- helpers


def _bad_name(message: str) -> NoReturn:
    """Refuse the file name with a message for the user."""
    raise Invalid(message, field="file")


def _leading_word(part: str) -> str:
    """The letters and digits a server would read as this dot-part's extension."""
    folded = unicodedata.normalize("NFKC", part).casefold()
    match = _LEADING_WORD.match(folded)
    return match.group() if match else ""


def _refuse_active(head: bytes) -> None:
    """Refuse programs and browser-active content, whatever the file's name."""
    for magic, label in _PROGRAMS:
        if head.startswith(magic):
            raise UnsupportedType(f"the content is {label}, whatever its name")
    start = head.removeprefix(_BOM).lstrip(_BLANK)[:16].lower()
    for marker, label in _ACTIVE:
        if start.startswith(marker):
            raise UnsupportedType(f"the content is {label}, whatever its name")
    # PHP hidden inside an otherwise valid image (a polyglot) runs if a server ever includes
    # it. Only the full "<?php" tag: the short "<?=" turns up by chance in about one
    # compressed file in 4,000, and refusing those would be a bug users hit.
    if b"<?php" in head.lower():
        raise UnsupportedType("the content contains PHP code, whatever its name")


def _is_utf8(head: bytes) -> bool:
    """Whether the bytes are UTF-8, allowing a character cut off at the end of the head."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _sniff_type(head: bytes) -> str | None:
    """The content type for the first bytes of a file, by signature."""
    for content_type, (_, _, signatures) in _KINDS.items():
        if head.startswith(signatures):
            return content_type
    if head[:4] == b"RIFF":
        return _RIFF.get(head[8:12])
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: the DocType near the start tells WebM apart
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"  # "BM" alone is too common in text; the header size confirms it
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return _mpeg_audio(head)
    if head[257:262] == b"ustar":
        return _TAR
    return None


def _iso_media(head: bytes) -> str:
    """Image, audio or video for an ISO media file, from the brands in its ftyp box."""
    major = head[8:12]
    box_end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = {major} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
    # Generic HEIF files (major brand mif1/msf1) name their codec among the compatible brands;
    # a video is never judged by those, so an MP4 listing "hevc" stays a video.
    generic = major in (b"mif1", b"msf1")
    if major in (b"avif", b"avis") or (generic and b"avif" in brands):
        return "image/avif"
    if major in _HEIC_BRANDS or (generic and brands & _HEIC_BRANDS):
        return "image/heic"
    if generic:
        return "image/heif"
    if major in (b"M4A ", b"M4B ", b"M4P "):
        return "audio/mp4"
    return "video/quicktime" if major == b"qt  " else "video/mp4"


def _mpeg_audio(head: bytes) -> str | None:
    """MP3 or AAC for an MPEG audio frame header, None if its fields are impossible."""
    if head[1] & 0x06 == 0:  # layer bits 00 mean an AAC (ADTS) frame
        return "audio/aac" if head[1] & 0xF6 == 0xF0 else None
    # Reserved version, bitrate or sample-rate bits: random bytes, not a frame.
    if head[1] & 0x18 == 0x08 or head[2] >> 4 == 0x0F or (head[2] >> 2) & 0x03 == 0x03:
        return None
    return "audio/mpeg"
