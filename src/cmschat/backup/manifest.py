"""A backup's manifest: what it holds and how to check it, stored beside its artifacts.

The manifest is plain JSON (listing and pruning need no key) and holds no key material:
sizes, checksums, row counts, the Alembic revision, the audit chain head.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cmschat.backup.crypto import Sealed
from cmschat.errors import Invalid

FORMAT = 1
MANIFEST_NAME = "manifest.json"
_ID = re.compile(r"\d{8}T\d{6}Z-(full|incremental)")


@dataclass(frozen=True)
class Artifact:
    """One encrypted file of a backup."""

    name: str
    size: int
    sha256: str
    plain_size: int
    plain_sha256: str

    @classmethod
    def of(cls, name: str, sealed: Sealed) -> Artifact:
        """The artifact record for what ``seal`` wrote."""
        return cls(name, sealed.size, sealed.sha256, sealed.plain_size, sealed.plain_sha256)

    def sealed(self) -> Sealed:
        """The checksums to expect when opening it."""
        return Sealed(self.size, self.sha256, self.plain_size, self.plain_sha256)


@dataclass(frozen=True)
class FileEntry:
    """An attachment in the files archive, as the database named it at snapshot time."""

    key: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """Everything a restore or a drill checks a backup against."""

    id: str
    kind: str
    created_at: datetime
    cmschat_version: str
    database_kind: str
    alembic_revision: str | None
    artifacts: list[Artifact] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    audit_head: tuple[int, str] | None = None
    files: list[FileEntry] = field(default_factory=list)
    binlog: dict[str, Any] | None = None
    """MariaDB: the binary log file and position the snapshot corresponds to."""
    base_id: str | None = None
    """An incremental's previous backup."""
    duration_seconds: float = 0.0
    format: int = FORMAT

    @property
    def size(self) -> int:
        """Bytes stored for this backup."""
        return sum(artifact.size for artifact in self.artifacts)

    def artifact(self, name: str) -> Artifact | None:
        """The artifact called ``name``, if this backup has one."""
        return next((a for a in self.artifacts if a.name == name), None)

    def to_json(self) -> str:
        """The manifest as stored."""
        body = asdict(self)
        body["created_at"] = self.created_at.astimezone(UTC).isoformat()
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read a stored manifest; Invalid if it is not one."""
        try:
            body = json.loads(text)
            if body.get("format") != FORMAT:
                raise Invalid(f"manifest format {body.get('format')} is not supported")
            body["created_at"] = datetime.fromisoformat(body["created_at"])
            body["artifacts"] = [Artifact(**a) for a in body["artifacts"]]
            body["files"] = [FileEntry(**f) for f in body["files"]]
            if body["audit_head"] is not None:
                body["audit_head"] = (int(body["audit_head"][0]), str(body["audit_head"][1]))
            return cls(**body)
        except (ValueError, KeyError, TypeError) as exc:
            raise Invalid(f"not a cmschat backup manifest ({type(exc).__name__})") from None


def new_id(at: datetime, kind: str) -> str:
    """A backup id: its UTC time and kind, so ids sort in time order."""
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{kind}"


def check_id(backup_id: str) -> str:
    """The id itself, or Invalid for anything that is not a backup id."""
    if not _ID.fullmatch(backup_id):
        raise Invalid(f"{backup_id!r} is not a backup id like 20260101T030000Z-full")
    return backup_id
