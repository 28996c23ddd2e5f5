"""Package layering: the data layer and the job scheduler know no domain, and no two
domain packages import each other (route modules and the composition root excepted)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import cmschat

SRC = Path(cmschat.__file__).parent
TRANSPORT_FILES = {"api.py", "admin_api.py", "app.py", "context.py"}
"""Routes and the composition root: they wire the packages together, so they may import any."""
TRANSPORT_PACKAGES = {"api", "websocket"}
DOMAINS = {
    "accounts",
    "attachments",
    "audit",
    "backup",
    "chat",
    "cms",
    "jobs",
    "monitoring",
    "realtime",
    "retention",
}
PENDING_LOOPS = {
    # chat's message views, sends and deletions call attachments (link, list, erase) while
    # attachments checks room membership through chat.permissions: inverting one side
    # touches every caller of the message services (or injects the room checks); not done.
    frozenset({"attachments", "chat"}),
    # observability's ASGI metrics wrap the broker's deliver callback (its types come from
    # realtime) while realtime counts its sends in observability's instruments.
    frozenset({"observability", "realtime"}),
}


def imported_packages(path: Path) -> set[str]:
    """The top-level cmschat packages a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "cmschat":
                names = [f"cmschat.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("cmschat.")}
    return found


def is_transport(relative: Path) -> bool:
    return (
        relative.name in TRANSPORT_FILES
        or relative.name.startswith("cli")
        or relative.parts[0] in TRANSPORT_PACKAGES
    )


def package_graph() -> dict[str, set[str]]:
    """Package -> the other packages its non-route modules import."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if len(relative.parts) < 2 or is_transport(relative):
            continue
        if relative.parts[:2] == ("db", "models.py"):  # the model registry Alembic reads
            continue
        package = relative.parts[0]
        graph.setdefault(package, set()).update(imported_packages(path) - {package})
    return graph


def test_no_two_packages_import_each_other() -> None:
    graph = package_graph()
    loops = {
        frozenset({a, b})
        for a, b in itertools.combinations(sorted(graph), 2)
        if b in graph[a] and a in graph.get(b, set())
    }
    assert loops - PENDING_LOOPS == set()


def test_the_data_layer_imports_no_domain() -> None:
    assert package_graph()["db"] & DOMAINS == set()


def test_the_scheduler_and_the_lease_know_no_domain() -> None:
    assert package_graph()["jobs"] & DOMAINS == set()


def test_audit_does_not_import_accounts() -> None:
    assert "accounts" not in package_graph()["audit"]
