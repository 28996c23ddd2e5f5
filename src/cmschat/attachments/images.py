"""Images: prove they decode, and drop their metadata (EXIF, GPS, comments) before storing.

A phone photo carries where it was taken. Pillow re-encodes the pixels without any of
the metadata (EXIF, XMP, IPTC/Photoshop, comments, PNG text chunks); the EXIF orientation
is applied first so the picture still stands upright, and the colour (ICC) profile is kept
so colours stay true. Runs in a worker thread (decoding is CPU work), on a spooled file,
not in memory.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from cmschat.attachments.gif import strip_gif
from cmschat.errors import Invalid

# Formats we re-encode, or (GIF) copy block by block; others (HEIC, AVIF, BMP...) are stored
# as sent, not as images.
CLEANED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
# Decoder facts the encoder needs to draw the same pixels; every other key is metadata, and
# some encoders write what they find in ``info`` back (JPEG its comment, PNG its profile).
_PIXEL_INFO = frozenset({"transparency"})
MAX_PIXELS = 40_000_000  # a 8000x5000 photo; beyond is refused as a likely decompression bomb
SPOOL_BYTES = 1 << 20


def clean_image(source: IO[bytes]) -> tuple[IO[bytes], str] | None:
    """A JPEG, PNG, WebP or GIF without metadata: (file, content type), or None if not one."""
    source.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                if image.format not in CLEANED:
                    return None
                if image.width * image.height > MAX_PIXELS:
                    raise Invalid(f"images are at most {MAX_PIXELS:,} pixels", field="file")
                image.load()
                fmt = image.format
                icc_profile = image.info.get("icc_profile")
                upright = ImageOps.exif_transpose(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Invalid(f"images are at most {MAX_PIXELS:,} pixels", field="file") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise Invalid("the image is damaged and cannot be read", field="file") from None
    cleaned: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    if fmt == "GIF":  # re-encoding would lose frames and timing: drop blocks instead
        try:
            strip_gif(source, cleaned)
        except BaseException:
            cleaned.close()
            raise
        cleaned.seek(0)
        return cleaned, CLEANED[fmt]
    upright.info = {key: value for key, value in upright.info.items() if key in _PIXEL_INFO}
    options: dict[str, object] = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "JPEG":
        options |= {"quality": 90, "optimize": True}
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
    upright.save(cleaned, format=fmt, **options)
    cleaned.seek(0)
    return cleaned, CLEANED[fmt]
