"""``cmschat.realtime`` routes events as plain data: it imports no domain package, nor the
transports or the app context (what a replay needs comes in through a Protocol)."""

from __future__ import annotations

import ast
from pathlib import Path

import cmschat

REALTIME = Path(cmschat.__file__).parent / "realtime"
FORBIDDEN = (
    "cmschat.accounts",
    "cmschat.chat",
    "cmschat.attachments",
    "cmschat.audit",
    "cmschat.cms",
    "cmschat.retention",
    "cmschat.backup",
    "cmschat.monitoring",
    "cmschat.jobs",
    "cmschat.context",
    "cmschat.api",
    "cmschat.websocket",
)


def test_realtime_imports_no_domain_package() -> None:
    offenders = []
    for path in sorted(REALTIME.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                    offenders.append(f"{path.name}:{node.lineno} {name}")
    assert offenders == []
