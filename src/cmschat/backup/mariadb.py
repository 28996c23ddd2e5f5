"""MariaDB backups: ``mariadb-dump --single-transaction`` streamed through zstd and age."""

from __future__ import annotations

from cmschat.backup.engines import SqliteEngine
from cmschat.errors import CmschatError


class MariadbEngine(SqliteEngine):
    """Placeholder until the dump engine lands."""

    def __init__(self, url: str) -> None:
        raise CmschatError("backup: MariaDB backups are not available yet")
