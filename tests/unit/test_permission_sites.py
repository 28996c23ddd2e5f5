"""Role checks stay in their two places: account roles in api/deps.py, room roles in
chat/permissions.py (accounts/service.py keeps "the last admin" rule, a data rule)."""

from __future__ import annotations

import re
from pathlib import Path

import cmschat

SRC = Path(cmschat.__file__).parent
ROLE_CHECK = re.compile(
    r"\brole\s+(?:is not|is|==|!=|not in|in)\s+\(?(?:MemberRole|MANAGERS|Role\.)"
)
ALLOWED = {"api/deps.py", "chat/permissions.py", "accounts/service.py"}


def test_no_role_comparison_outside_the_permission_modules() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name in ALLOWED or name.startswith("db/migrations/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ROLE_CHECK.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == [], "check roles through cmschat.chat.permissions or api.deps"
