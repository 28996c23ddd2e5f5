"""Imports point one way: transport -> domains -> infrastructure -> kernel, with no loops.

The rule of docs/architecture.md, read from the code itself (every ``import`` in src/,
except those under ``if TYPE_CHECKING:``), so it stays true as the code grows. A failure
names the module and the import that broke it; fix the design, not the table, unless the
new direction is one the architecture document also accepts.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

KERNEL = frozenset(
    {
        "cmschat",
        "errors",
        "clock",
        "settings",
        "events",
        "jsonshape",
        "jsonbytes",
        "pagination",
        "degraded",
        "admission",
    }
)
"""Plain building blocks every layer may use; they import only each other."""

ALLOWED: dict[str, frozenset[str]] = {
    # infrastructure: knows no domain
    "observability": KERNEL,
    "db": KERNEL,
    "realtime": KERNEL | {"observability"},
    "jobs": KERNEL | {"db", "observability"},
    # domains, each above the ones it may use
    "audit": KERNEL | {"db", "observability"},
    "accounts": KERNEL | {"db", "observability", "audit"},
    "attachments": KERNEL | {"db", "observability", "audit", "accounts"},
    # messages carry attachments; room rules reach attachments as attachments.access.RoomAccess
    "chat": KERNEL | {"db", "observability", "audit", "accounts", "attachments"},
    "retention": KERNEL
    | {"db", "observability", "audit", "accounts", "chat", "attachments", "jobs"},
    "cms": KERNEL
    | {"db", "observability", "audit", "accounts", "chat", "attachments", "jobs", "retention"},
    "backup": KERNEL | {"db", "observability", "audit", "attachments", "jobs"},
    "monitoring": KERNEL | {"db", "observability", "audit", "chat", "jobs"},
}
"""Which package's own (non-transport) modules may import which other packages."""

DOMAIN_FREE = ("realtime", "db", "observability", "jobs")
"""Infrastructure that must stay reusable whatever the domain does."""


def is_transport(module: str) -> bool:
    """Transport and composition: routes, the WebSocket endpoint, the CLI, start-up.

    They may import anything; nothing else may import them.
    """
    parts = [*module.split("."), ""]
    return (
        module
        in {
            "cmschat.__main__",
            "cmschat.app",
            "cmschat.context",
            "cmschat.web",
            "cmschat.settings_example",
            "cmschat.redis_clients",  # builds the Redis clients and the broker for app and CLI
            # endpoints served by the app, beside the routers
            "cmschat.observability.health",
            "cmschat.observability.metrics",
        }
        or parts[1].startswith("cli")
        or parts[1] in {"api", "websocket"}
        or parts[-2] in {"api", "admin_api", "hot_routes"}
    )


REGISTRY = ("cmschat.db.models", "cmschat.db.migrate", "cmschat.db.migrations")
"""The model registry and the migrations see every table by design, and anyone may run
them (start-up, the CLI, a backup restoring a schema)."""


def is_registry(module: str) -> bool:
    """Part of the schema's registry: outside the table below, in both directions."""
    return module.startswith(REGISTRY)


def package_of(module: str) -> str:
    """``cmschat.chat.messages`` -> ``chat``; ``cmschat`` -> ``cmschat``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    """The dotted name of a source file."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Import:
    """One ``import`` of a cmschat module by another."""

    importer: str
    imported: str
    line: int
    top_level: bool
    """Run when the importer loads (not inside a function): these make file loops."""

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def _type_checking_block(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name | ast.Attribute)
        and ast.unparse(node.test).endswith("TYPE_CHECKING")
    )


def _imports_in(tree: ast.Module, importer: str) -> Iterator[Import]:
    def visit(node: ast.AST, top_level: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module]
                # ``from cmschat.chat import messages`` imports the module cmschat.chat.messages
                names += [f"{child.module}.{alias.name}" for alias in child.names]
                for name in names:
                    if name.startswith("cmschat") and (name == child.module or _exists(name)):
                        yield Import(importer, name, child.lineno, top_level)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("cmschat"):
                        yield Import(importer, alias.name, child.lineno, top_level)
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from visit(child, top_level and not inner)

    yield from visit(tree, True)


def _exists(module: str) -> bool:
    path = SRC.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def all_imports() -> list[Import]:
    """Every cmschat-to-cmschat import in src/."""
    found: list[Import] = []
    for path in sorted(SRC.rglob("*.py")):
        found += _imports_in(ast.parse(path.read_text(), str(path)), module_name(path))
    return found


IMPORTS = all_imports()


def test_the_scan_sees_the_code() -> None:
    # A scan that found nothing would pass every rule below.
    assert len(IMPORTS) > 300
    assert any(i.importer == "cmschat.app" for i in IMPORTS)


def test_nothing_below_transport_imports_a_route_the_cli_or_start_up() -> None:
    wrong = [str(i) for i in IMPORTS if not is_transport(i.importer) and is_transport(i.imported)]
    assert wrong == []


def test_every_package_imports_only_what_the_table_allows() -> None:
    wrong = []
    for i in IMPORTS:
        source, target = package_of(i.importer), package_of(i.imported)
        if is_transport(i.importer) or is_registry(i.importer) or is_registry(i.imported):
            continue
        if source == target:
            continue
        allowed = KERNEL if source in KERNEL else ALLOWED.get(source)
        if allowed is None:
            wrong.append(f"{i} (package {source!r} is not in the table: add it)")
        elif target not in allowed:
            wrong.append(str(i))
    assert wrong == []


@pytest.mark.parametrize("package", DOMAIN_FREE)
def test_infrastructure_knows_no_domain(package: str) -> None:
    domains = {p for p in ALLOWED if p not in DOMAIN_FREE}
    wrong = [
        str(i)
        for i in IMPORTS
        if package_of(i.importer) == package
        and not is_transport(i.importer)
        and not is_registry(i.importer)
        and package_of(i.imported) in domains
    ]
    assert wrong == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` if it has any (depth-first search)."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_package_loops() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        source, target = package_of(i.importer), package_of(i.imported)
        registry = is_registry(i.importer) or is_registry(i.imported)
        if source != target and not is_transport(i.importer) and not registry:
            graph[source].add(target)
    assert _cycle(graph) is None


def test_no_file_loops() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in IMPORTS:
        # A package's __init__ importing its own modules is how packages export names.
        if i.top_level and not i.importer.startswith(f"{i.imported}."):
            graph[i.importer].add(i.imported)
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
