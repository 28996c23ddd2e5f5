"""GIF: drop comment and metadata blocks without re-encoding, so animations stay intact.

A GIF is a header, optional colour table, then blocks until the trailer. Comment blocks
and application blocks (XMP lives in one) go; the animation loop count (NETSCAPE2.0 /
ANIMEXTS1.0) and a colour profile (ICCRGBG1012) stay, as do the frames. Bytes after the
trailer (a common place to hide data) are dropped.
"""

from __future__ import annotations

from typing import IO

from cmschat.errors import Invalid

_EXTENSION, _IMAGE, _TRAILER = 0x21, 0x2C, 0x3B
_COMMENT, _APPLICATION = 0xFE, 0xFF
_KEPT_APPLICATIONS = (b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012")


def _read(source: IO[bytes], size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise Invalid("the image is damaged and cannot be read", field="file")
    return data


def _sub_blocks(source: IO[bytes]) -> bytes:
    """Data sub-blocks up to and including the zero-length terminator, as they were."""
    parts = []
    while True:
        size = _read(source, 1)
        parts.append(size)
        if size == b"\x00":
            return b"".join(parts)
        parts.append(_read(source, size[0]))


def _colour_table(packed: int) -> int:
    """The size in bytes of the colour table a packed field announces (0 if none)."""
    return 3 * (2 ** ((packed & 0x07) + 1)) if packed & 0x80 else 0


def strip_gif(source: IO[bytes], target: IO[bytes]) -> None:
    """Copy a GIF from ``source`` to ``target`` without its comments and metadata blocks."""
    source.seek(0)
    header = _read(source, 13)  # signature, version, logical screen descriptor
    if header[:6] not in (b"GIF87a", b"GIF89a"):
        raise Invalid("the image is damaged and cannot be read", field="file")
    target.write(header + _read(source, _colour_table(header[10])))
    while True:
        introducer = source.read(1)
        if not introducer or introducer[0] == _TRAILER:
            # Browsers show a GIF that ends without its trailer; so do we, with one added.
            target.write(bytes([_TRAILER]))
            return
        if introducer[0] == _IMAGE:
            descriptor = _read(source, 9)
            table = _read(source, _colour_table(descriptor[8]))
            code_size = _read(source, 1)
            target.write(introducer + descriptor + table + code_size + _sub_blocks(source))
        elif introducer[0] == _EXTENSION:
            label = _read(source, 1)
            body = _sub_blocks(source)
            if label[0] == _COMMENT:
                continue
            # An application block starts with an 11-byte identifier in its first sub-block.
            if label[0] == _APPLICATION and body[1:12] not in _KEPT_APPLICATIONS:
                continue
            target.write(introducer + label + body)
        else:
            raise Invalid("the image is damaged and cannot be read", field="file")
