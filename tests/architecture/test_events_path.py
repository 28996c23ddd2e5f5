"""Events reach clients one way only: services queue them on the unit of work, which
publishes after its commit. No route, WebSocket action, CLI command or service publishes
by hand (docs/architecture.md, "The life of a message")."""

from __future__ import annotations

import ast
from pathlib import Path

import cmschat

SOURCE = Path(cmschat.__file__).parent
PUBLISHING = SOURCE / "realtime"
"""The broker and the unit of work's publisher live here; only they publish."""
WIRING = {SOURCE / "app.py", SOURCE / "cli_users.py"}
"""Start-up code that gives the unit of work its publisher (``publisher_for``)."""
HAND_PUBLISHING = {"publish_after_commit", "publish_committed"}


def modules() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def imported_names(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def broker_publish_calls(tree: ast.AST) -> list[int]:
    """Lines calling ``<...>broker.publish(...)`` (the broker's own fan-out)."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "publish":
            continue
        receiver = node.func.value
        name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
        if "broker" in name.lower():
            lines.append(node.lineno)
    return lines


def called_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_only_realtime_publishes_to_the_broker() -> None:
    offenders = []
    for path in modules():
        if PUBLISHING in path.parents:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path.relative_to(SOURCE)}:{line}" for line in broker_publish_calls(tree)]
    assert offenders == []


def test_no_module_outside_realtime_publishes_by_hand() -> None:
    offenders = []
    for path in modules():
        if PUBLISHING in path.parents:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        used = (imported_names(tree) | called_names(tree)) & HAND_PUBLISHING
        if used:
            offenders.append(f"{path.relative_to(SOURCE)}: {sorted(used)}")
        if path not in WIRING and "cmschat.realtime.publish" in imported_names(tree):
            offenders.append(f"{path.relative_to(SOURCE)}: imports cmschat.realtime.publish")
    assert offenders == []


def test_the_checks_see_hand_publishing() -> None:
    """The checks above would catch the old way (a route publishing after its service)."""
    old_way = ast.parse(
        "from cmschat.realtime.publish import publish_after_commit\n"
        "async def route(session, context):\n"
        "    publish_after_commit(session, context.broker, events)\n"
        "    await context.broker.publish(envelopes)\n"
    )
    assert "publish_after_commit" in imported_names(old_way) & HAND_PUBLISHING
    assert "publish_after_commit" in called_names(old_way)
    assert broker_publish_calls(old_way) == [4]
