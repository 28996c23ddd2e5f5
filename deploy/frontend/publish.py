"""Publish the web client (``web/``) to an S3 bucket behind CloudFront.

    .venv/bin/python deploy/frontend/publish.py --bucket B --distribution-id D \\
        --api-origin https://chat.example.com [--prefix P] [--dry-run]

A real sync: new and changed files are uploaded (unchanged ones, by MD5 against the
object's ETag, are skipped), HTML and ``config.json`` last so that no client gets new HTML
naming assets not there yet, objects under the prefix that ``web/`` no longer has are
deleted after that, and CloudFront is told to forget the paths that changed. The
``config.json`` uploaded names ``--api-origin`` instead of the repository's.

S3 cannot set response headers such as the Content-Security-Policy: CloudFront adds them
from a response headers policy (``cloudfront-headers.json``; ``--write-headers-policy``
renders it for this API origin). Credentials come from the standard AWS chain; the
endpoints too (``AWS_ENDPOINT_URL_S3`` / ``_CLOUDFRONT``, which the tests point at moto).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from hosting import (
    CONFIG,
    DEFAULT_WEB_DIR,
    PublishError,
    check_origin,
    config_json,
    headers_policy,
)

NO_CACHE = "no-cache"
"""HTML and config.json: always revalidated, so a release shows on the next load."""
IMMUTABLE = "public, max-age=31536000, immutable"
"""Names carrying a content hash (``app.3f9c2a1b.js``) never change under the same name."""
SHORT = "public, max-age=300"
"""Everything else: the files are not content-hashed, and ES modules of two releases must
not mix for long, so five minutes, then a cheap revalidation by ETag."""
_HASHED = re.compile(r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$")
_LAST = frozenset({".html", ".htm"})
INVALIDATE_ALL_ABOVE = 15
"""More changed paths than this: one ``/*`` (CloudFront bills paths, a wildcard is one)."""
_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".map": "application/json",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
_TEXT = ("text/", "application/json", "image/svg+xml")


def cache_control(name: str) -> str:
    """Cache-Control for the file at ``name`` (relative to ``web/``)."""
    if name == CONFIG or Path(name).suffix in _LAST:
        return NO_CACHE
    return IMMUTABLE if _HASHED.search(name) else SHORT


def content_type(name: str) -> str:
    """Content-Type for ``name``; text in UTF-8 (the files are), unknown as octets."""
    suffix = Path(name).suffix.lower()
    if suffix:
        kind = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    else:
        kind = "text/plain"  # LICENSE, NOTICE, README of the vendored libraries
    return f"{kind}; charset=utf-8" if kind.startswith(_TEXT) else kind


def is_last(name: str) -> bool:
    """Uploaded after every asset: the files that name the others."""
    return name == CONFIG or Path(name).suffix in _LAST


@dataclass(frozen=True)
class LocalFile:
    """One file to publish: its path under ``web/`` and its bytes."""

    name: str
    body: bytes

    @property
    def md5(self) -> str:
        """The MD5 an S3 single-part upload reports as its ETag."""
        return hashlib.md5(self.body, usedforsecurity=False).hexdigest()


def local_files(web_dir: Path, api_origin: str) -> list[LocalFile]:
    """Every file of ``web_dir``, ``config.json`` written for ``api_origin``."""
    if not (web_dir / "index.html").is_file():
        raise PublishError(f"{web_dir} is not the web client (no index.html)")
    files = [
        LocalFile(path.relative_to(web_dir).as_posix(), path.read_bytes())
        for path in sorted(web_dir.rglob("*"))
        if path.is_file()
        and path.name != CONFIG
        # Editor and OS droppings (.DS_Store, .swp) are not part of the client.
        and not any(part.startswith(".") for part in path.relative_to(web_dir).parts)
    ]
    return [*files, LocalFile(CONFIG, config_json(api_origin))]


@dataclass
class Plan:
    """What a sync changes: uploads in order (assets, then HTML and config), then deletes."""

    uploads: list[LocalFile] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    unchanged: int = 0


def plan_sync(files: Iterable[LocalFile], remote: dict[str, str], *, force: bool) -> Plan:
    """Compare ``files`` with ``remote`` (name -> ETag) and order the changes."""
    plan = Plan()
    wanted: set[str] = set()
    for file in files:
        wanted.add(file.name)
        if not force and remote.get(file.name) == file.md5:
            plan.unchanged += 1
        else:
            plan.uploads.append(file)
    plan.uploads.sort(key=lambda file: (is_last(file.name), file.name == "index.html"))
    plan.deletes = sorted(set(remote) - wanted)
    return plan


def invalidation_paths(names: Sequence[str]) -> list[str]:
    """CloudFront paths to forget for these changed names (site root = the prefix)."""
    paths: set[str] = set()
    for name in names:
        paths.add("/" + name)
        if name == "index.html" or name.endswith("/index.html"):
            paths.add("/" + name.removesuffix("index.html"))  # "/" is cached apart
    if len(paths) > INVALIDATE_ALL_ABOVE:
        return ["/*"]
    return sorted(paths)


class Site:
    """The bucket (under a prefix) and the distribution in front of it."""

    def __init__(self, s3: Any, cloudfront: Any, bucket: str, prefix: str, distribution: str):
        self.s3 = s3
        self.cloudfront = cloudfront
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.distribution = distribution
        self.start = f"{self.prefix}/" if self.prefix else ""
        """Every key under the prefix starts so ("site" is not a prefix of "site2/...")."""

    def key(self, name: str) -> str:
        """The object key of ``name``."""
        return self.start + name

    def check(self) -> None:
        """Both exist and can be reached, before anything is written."""
        try:
            # A listing, not HeadBucket: a role allowed s3:ListBucket for its prefix only
            # may list under it, while HeadBucket (no prefix) would be refused.
            self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.start, MaxKeys=1)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise PublishError(f"bucket {self.bucket!r} does not exist") from None
            raise PublishError(f"bucket {self.bucket!r}: {describe(error)}") from None
        try:
            self.cloudfront.get_distribution(Id=self.distribution)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchDistribution":
                raise PublishError(f"distribution {self.distribution!r} not found") from None
            raise PublishError(f"distribution {self.distribution!r}: {describe(error)}") from None

    def remote(self) -> dict[str, str]:
        """Objects under the prefix: name (relative to it) -> ETag without quotes."""
        found: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.start
        ):
            for item in page.get("Contents", []):
                found[item["Key"][len(self.start) :]] = item["ETag"].strip('"')
        return found

    def upload(self, file: LocalFile) -> None:
        """Put one file with its Content-Type and Cache-Control."""
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key(file.name),
            Body=file.body,
            ContentType=content_type(file.name),
            CacheControl=cache_control(file.name),
        )

    def delete(self, names: Sequence[str]) -> None:
        """Delete these objects, a thousand per request (S3's limit)."""
        for start in range(0, len(names), 1000):
            batch = [{"Key": self.key(name)} for name in names[start : start + 1000]]
            answer = self.s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise PublishError(f"could not delete {first['Key']}: {first['Message']}")

    def invalidate(self, paths: list[str]) -> str:
        """Ask CloudFront to forget ``paths``; the invalidation's id."""
        answer = self.cloudfront.create_invalidation(
            DistributionId=self.distribution,
            InvalidationBatch={
                "Paths": {"Quantity": len(paths), "Items": paths},
                "CallerReference": f"cmschat-publish-{time.time_ns()}",
            },
        )
        return str(answer["Invalidation"]["Id"])


def publish(site: Site, files: list[LocalFile], *, dry_run: bool, force: bool = False) -> str:
    """Sync ``files`` to ``site`` and invalidate what changed; a one-line summary."""
    site.check()
    plan = plan_sync(files, site.remote(), force=force)
    changed = [file.name for file in plan.uploads] + plan.deletes
    paths = invalidation_paths(changed)
    where = f"s3://{site.bucket}/{site.key('')}"
    counts = (
        f"{len(plan.uploads)} uploaded, {plan.unchanged} unchanged, {len(plan.deletes)} deleted"
    )
    if dry_run:
        for file in plan.uploads:
            print(f"would upload {file.name} ({cache_control(file.name)})")
        for name in plan.deletes:
            print(f"would delete {name}")
        return f"dry run, {where}: would be {counts}; would invalidate {len(paths)} path(s)"
    for file in plan.uploads:
        site.upload(file)
    # Deleted last: a page still cached from the last release may ask for them meanwhile.
    site.delete(plan.deletes)
    if not paths:
        return f"published {where}: {counts}; nothing to invalidate"
    invalidation = site.invalidate(paths)
    return (
        f"published {where}: {counts}; invalidation {invalidation} of "
        f"{len(paths)} path(s) on {site.distribution}"
    )


def describe(error: BaseException) -> str:
    """One line for an AWS error."""
    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        return f"{detail.get('Code', '?')}: {detail.get('Message', '')}".strip(": ")
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True, help="the S3 bucket (private, behind OAC)")
    parser.add_argument("--distribution-id", required=True, help="the CloudFront distribution")
    parser.add_argument("--api-origin", required=True, help="e.g. https://chat.example.com")
    parser.add_argument("--prefix", default="", help="key prefix = the origin's origin path")
    parser.add_argument("--web-dir", type=Path, default=DEFAULT_WEB_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="show the changes, make none")
    parser.add_argument("--force", action="store_true", help="upload unchanged files too")
    parser.add_argument(
        "--write-headers-policy",
        type=Path,
        metavar="FILE",
        help="also write the CloudFront response headers policy for this API origin",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 when published, 1 with one line on stderr when not."""
    args = parse_args(argv)
    try:
        api_origin = check_origin(args.api_origin)
        if args.write_headers_policy:
            policy = headers_policy(api_origin)
            args.write_headers_policy.write_text(json.dumps(policy, indent=2) + "\n")
        files = local_files(args.web_dir, api_origin)
        session = boto3.session.Session()
        site = Site(
            session.client("s3"),
            session.client("cloudfront"),
            args.bucket,
            args.prefix,
            args.distribution_id,
        )
        try:
            print(publish(site, files, dry_run=args.dry_run, force=args.force))
        except (BotoCoreError, ClientError) as error:
            raise PublishError(describe(error)) from None
    except (PublishError, OSError) as error:
        print(f"publish: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
