"""Which keys a backup is encrypted to, and where the key to open it is."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyrage

from cmschat.backup.crypto import IDENTITY_NAME, generate_identity, load_identity, public_of
from cmschat.errors import ConfigError
from cmschat.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipients:
    """The public keys to encrypt to; ``generated`` names a key file made just now."""

    keys: list[str]
    generated: Path | None = None


def identity_path(settings: Settings) -> Path:
    """The configured private key file, or the one generated into the data dir."""
    return settings.backup.identity_file or settings.data_dir / IDENTITY_NAME


def require_recipients(settings: Settings) -> None:
    """ConfigError unless recipients are set or the embedded default may generate a key."""
    if not settings.backup.recipients and not settings.is_sqlite:
        raise ConfigError(
            "CMSCHAT_BACKUP__RECIPIENTS: required with MariaDB (age public keys, "
            "comma-separated; make a key pair with age-keygen)"
        )


def resolve_recipients(settings: Settings) -> Recipients:
    """The configured recipients; on SQLite with none, the data dir's key (made if absent)."""
    require_recipients(settings)
    if settings.backup.recipients:
        return Recipients(list(settings.backup.recipients))
    path = identity_path(settings)
    if path.exists():
        return Recipients([public_of(path)])
    public = generate_identity(path)
    log.warning(
        "backup: generated the backup key %s; COPY IT SOMEWHERE SAFE, away from this "
        "machine: without it no backup can be restored",
        path,
        extra={"event.action": "backup.key_generated"},
    )
    return Recipients([public], generated=path)


def restore_identity(settings: Settings) -> pyrage.x25519.Identity:
    """The private key for verify, restore and drill."""
    path = identity_path(settings)
    if settings.backup.identity_file is None and not path.exists():
        raise ConfigError(
            "CMSCHAT_BACKUP__IDENTITY_FILE: not set, and there is no generated key at "
            f"{path}; point it at the backup's private key"
        )
    return load_identity(path)
