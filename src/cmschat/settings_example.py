"""Renders ``.env.example`` from the Settings model: every variable, with its default.

``python -m cmschat.settings_example > .env.example`` regenerates the file; a test fails
when the committed file and the model disagree (a setting added, renamed or re-defaulted).
"""

from __future__ import annotations

from datetime import time
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cmschat.settings import Settings

HEADER = """\
# Every cmschat setting with its default. Copy to .env (read from the working directory)
# or set as environment variables, and uncomment what you change. What each one means:
# README.md, "Configuration". Nested settings use a double underscore.
# Generated from the Settings model by: python -m cmschat.settings_example > .env.example
"""

# Defaults the model fills in after reading (relative to CMSCHAT_DATA_DIR), and secrets.
COMPUTED = {
    "CMSCHAT_DATABASE_URL": "sqlite+aiosqlite:///var/cmschat.db, in CMSCHAT_DATA_DIR",
    "CMSCHAT_STORAGE_URL": "file://…/var/files, in CMSCHAT_DATA_DIR",
    "CMSCHAT_BACKUP__URL": "file://…/var/backups, in CMSCHAT_DATA_DIR",
    "CMSCHAT_SECRET_KEY": "generated into var/secret_key on SQLite; required on MariaDB",
    "CMSCHAT_WEB_DIR": "the web/ shipped with cmschat",
    "CMSCHAT_BACKUP__IDENTITY_FILE": "backup-identity.txt in CMSCHAT_DATA_DIR",
    "CMSCHAT_ATTACHMENTS__ALLOWED_EXTENSIONS": "the built-in list",
}

FOOTER = """\
# Not cmschat's own, but read by it:
# OTEL_EXPORTER_OTLP_ENDPOINT=        (unset: tracing off; see docs/monitoring.md)
# PROMETHEUS_MULTIPROC_DIR=           (only for several worker processes on one port)
"""


def _value(value: Any) -> str:
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def _line(name: str, field: FieldInfo) -> str:
    if name in COMPUTED:
        return f"# {name}=    (default: {COMPUTED[name]})"
    default = _default(field)
    shown = _value(default)
    return f"# {name}={shown}" + ("    (unset)" if default is None else "")


def variables() -> list[str]:
    """Every ``CMSCHAT_*`` variable the Settings model reads, in the model's order."""
    return [name for name, _ in _fields()]


def _fields() -> list[tuple[str, FieldInfo]]:
    found: list[tuple[str, FieldInfo]] = []
    for name, field in Settings.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for inner, inner_field in nested.model_fields.items():
                found.append((f"CMSCHAT_{name.upper()}__{inner.upper()}", inner_field))
        else:
            found.append((f"CMSCHAT_{name.upper()}", field))
    return found


def render() -> str:
    """The text of ``.env.example``."""
    sections: list[str] = [HEADER]
    current = ""
    lines: list[str] = []
    for name, field in _fields():
        section = name.split("__")[0] if "__" in name else "CMSCHAT"
        if section != current:
            if lines:
                sections.append("\n".join(lines) + "\n")
            current, lines = section, [_title(section)]
        lines.append(_line(name, field))
    sections.append("\n".join(lines) + "\n")
    sections.append(FOOTER)
    return "\n".join(sections)


def _title(section: str) -> str:
    if section == "CMSCHAT":
        return "# --- general ---"
    model = Settings.model_fields[section.removeprefix("CMSCHAT_").lower()].annotation
    first = (getattr(model, "__doc__", None) or "").strip().splitlines()[0]
    doc = first.rstrip(".").replace("``", "")
    return f"# --- {section.removeprefix('CMSCHAT_').lower()}: {doc} ---"


if __name__ == "__main__":
    print(render(), end="")
