"""``.env.example`` lists every setting with its true default (generated from Settings)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cmschat import settings_example
from cmschat.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
ASSIGNMENT = re.compile(r"^# (CMSCHAT_[A-Z0-9_]+)=(\S*)(.*)$")


def listed() -> dict[str, tuple[str, str]]:
    """Variable -> (value shown, remark) from the committed file."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            found[match[1]] = (match[2], match[3].strip())
    return found


def test_every_setting_is_in_the_file() -> None:
    missing = [name for name in settings_example.variables() if name not in listed()]
    assert missing == [], (
        f"{missing} missing from .env.example: "
        "run python -m cmschat.settings_example > .env.example"
    )
    unknown = set(listed()) - set(settings_example.variables())
    assert unknown == set(), f"{unknown} in .env.example are no settings"


def test_the_file_is_what_the_model_renders() -> None:
    assert ENV_EXAMPLE.read_text() == settings_example.render(), (
        "run python -m cmschat.settings_example > .env.example"
    )


def test_the_defaults_shown_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting every shown value explicitly changes nothing."""
    for name in list(os.environ):
        if name.startswith("CMSCHAT_"):
            monkeypatch.delenv(name)
    for name, (value, remark) in listed().items():
        if not remark:  # "(unset)" and computed defaults have no value to set
            monkeypatch.setenv(name, value)
    explicit = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in settings_example.COMPUTED:
        assert listed()[name][0] == ""
    assert explicit.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]
