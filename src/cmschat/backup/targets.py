"""Where backups are kept: a local directory or an S3-compatible bucket.

Blocking calls (run them in a thread). Names are ``BACKUP_ID/ARTIFACT`` or
``drills/NAME``; a file appears complete or not at all (temporary name, then rename;
S3 objects appear when their upload completes).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import boto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from cmschat.attachments.storage.base import BUCKET
from cmschat.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?")
# Multipart chunks of 8 MiB, two at a time: bounded memory on upload and download.
_TRANSFER = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=2)


def _check(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"not a backup object name: {name!r}")
    return name


class Target(Protocol):
    """A backup store."""

    where: str
    """For messages: the directory or bucket/prefix (never credentials)."""

    def put_file(self, name: str, source: Path) -> None:
        """Store a local file under ``name``."""
        ...

    def get_file(self, name: str, destination: Path) -> None:
        """Copy ``name`` to a local file; FileNotFoundError if there is none."""
        ...

    def put_text(self, name: str, text: str) -> None:
        """Store a small text object."""
        ...

    def get_text(self, name: str) -> str | None:
        """A small text object, or None."""
        ...

    def folders(self) -> list[str]:
        """The first path segments of every stored name."""
        ...

    def names(self, folder: str) -> list[str]:
        """The names stored under ``folder/``."""
        ...

    def delete_folder(self, folder: str) -> None:
        """Remove everything under ``folder/``."""
        ...


class LocalTarget:
    """Backups in a private local directory (0700, files 0600)."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.where = str(self.root)

    def _ensure(self, name: str) -> Path:
        path = self.root / _check(name)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        return path

    def put_file(self, name: str, source: Path) -> None:
        """Copy, fsync, rename into place."""
        path = self._ensure(name)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with source.open("rb") as reader, temp.open("xb") as writer:
                os.fchmod(writer.fileno(), 0o600)
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                os.fsync(writer.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    def get_file(self, name: str, destination: Path) -> None:
        """Copy the stored file."""
        shutil.copyfile(self.root / _check(name), destination)

    def put_text(self, name: str, text: str) -> None:
        """Write via a temporary file."""
        path = self._ensure(name)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as writer:
            writer.write(text)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temp, path)

    def get_text(self, name: str) -> str | None:
        """The file's text, or None."""
        try:
            return (self.root / _check(name)).read_text()
        except FileNotFoundError:
            return None

    def folders(self) -> list[str]:
        """Directories in the root."""
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def names(self, folder: str) -> list[str]:
        """Files in one directory."""
        directory = self.root / _check(folder)
        if not directory.is_dir():
            return []
        return sorted(f"{folder}/{p.name}" for p in directory.iterdir() if p.is_file())

    def delete_folder(self, folder: str) -> None:
        """Remove the directory."""
        shutil.rmtree(self.root / _check(folder), ignore_errors=True)


class S3Target:
    """Backups in a bucket under a prefix (server-side encrypted on top of age)."""

    def __init__(self, bucket: str, prefix: str, *, client: Any) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client
        self.where = f"s3://{bucket}/{self.prefix}"

    def _key(self, name: str) -> str:
        return self.prefix + _check(name)

    def put_file(self, name: str, source: Path) -> None:
        """Multipart upload; the object appears once complete."""
        self.client.upload_file(
            str(source),
            self.bucket,
            self._key(name),
            ExtraArgs={"ServerSideEncryption": "AES256"},
            Config=_TRANSFER,
        )

    def get_file(self, name: str, destination: Path) -> None:
        """Download in parts."""
        try:
            self.client.download_file(
                self.bucket, self._key(name), str(destination), Config=_TRANSFER
            )
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey"}:
                raise FileNotFoundError(f"{self.where}{name} does not exist") from None
            raise

    def put_text(self, name: str, text: str) -> None:
        """One small object."""
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(name),
            Body=text.encode(),
            ServerSideEncryption="AES256",
        )

    def get_text(self, name: str) -> str | None:
        """The object's text, or None."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey"}:
                return None
            raise
        return str(body.read().decode())

    def _list(self, prefix: str, delimiter: str | None) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {"Delimiter": delimiter} if delimiter else {}
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra)
        return list(pages)

    def folders(self) -> list[str]:
        """Common prefixes one level under the prefix."""
        found = []
        for page in self._list(self.prefix, "/"):
            for common in page.get("CommonPrefixes", []):
                found.append(str(common["Prefix"])[len(self.prefix) :].rstrip("/"))
        return found

    def names(self, folder: str) -> list[str]:
        """Object names under one folder."""
        names = []
        for page in self._list(self.prefix + _check(folder) + "/", None):
            for item in page.get("Contents", []):
                names.append(str(item["Key"])[len(self.prefix) :])
        return sorted(names)

    def delete_folder(self, folder: str) -> None:
        """Delete every object under the folder."""
        for name in self.names(folder):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def target_from_url(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
) -> Target:
    """LocalTarget for file:///PATH, S3Target for s3://BUCKET/PREFIX."""
    parts = urlsplit(url)
    usage = "CMSCHAT_BACKUP__URL: use file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX"
    if parts.query or parts.fragment:
        raise ConfigError(usage)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"} and parts.path[:1] == "/":
        return LocalTarget(Path(url2pathname(parts.path)))
    if parts.scheme == "s3" and BUCKET.fullmatch(parts.netloc):
        config = Config(
            connect_timeout=5,
            read_timeout=120,
            retries={"mode": "standard", "max_attempts": 5},
            s3={"addressing_style": "path" if s3_endpoint_url else "auto"},
        )
        session = boto3.session.Session(
            aws_access_key_id=s3_access_key,
            aws_secret_access_key=s3_secret_key,
            region_name=s3_region,
        )
        client = session.client("s3", endpoint_url=s3_endpoint_url, config=config)
        return S3Target(parts.netloc, unquote(parts.path), client=client)
    raise ConfigError(usage)
