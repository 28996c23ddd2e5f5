"""Attachment bytes behind one interface: a local directory or an S3-compatible bucket.

Every file-system and boto3 call runs in a worker thread, one bounded chunk at a time, so
a large upload or download neither blocks the event loop nor sits whole in memory. A save
is all or nothing: a reader finds the complete object or no object, never part of one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from cmschat.attachments.storage.base import BUCKET, PART_SIZE, Storage, check_key, new_key
from cmschat.attachments.storage.local import LocalStorage
from cmschat.errors import ConfigError
from cmschat.settings import Settings

__all__ = [
    "PART_SIZE",
    "LocalStorage",
    "Storage",
    "check_key",
    "new_key",
    "storage_from_url",
]


def storage_from_url(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
) -> Storage:
    """LocalStorage for file:///ABSOLUTE/PATH, S3Storage for s3://BUCKET/PREFIX."""
    parts = urlsplit(url)
    # The URL is not echoed back: a mistyped one may hold credentials.
    usage = "CMSCHAT_STORAGE_URL: use file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX"
    if parts.query or parts.fragment:
        raise ConfigError(usage)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"} and parts.path[:1] == "/":
        path = Path(url2pathname(parts.path))
        try:
            return LocalStorage(path)
        except OSError as exc:
            raise ConfigError(f"CMSCHAT_STORAGE_URL: cannot create {path}: {exc}") from exc
    if parts.scheme == "s3" and BUCKET.fullmatch(parts.netloc):
        # Here, not at the top: boto3 takes ~100 ms to import, which every process paid.
        from cmschat.attachments.storage.s3 import S3Storage

        return S3Storage(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=s3_endpoint_url,
            region=s3_region,
            access_key=s3_access_key,
            secret_key=s3_secret_key,
        )
    raise ConfigError(usage)


def storage_for(settings: Settings) -> Storage:
    """The attachment store the settings name."""
    secret = settings.s3_secret_access_key
    return storage_from_url(
        settings.storage_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key=settings.s3_access_key_id,
        s3_secret_key=secret.get_secret_value() if secret else None,
    )
