"""Every process the suite and the bench tools start dies with its parent
(``bench/children.py``): a killed pytest leaves no server holding a port or a database.

An AST check, names resolved through the module's imports (``from subprocess import Popen
as P``, ``import subprocess as sp``, ``ctx = multiprocessing.get_context()``): a regex on
``subprocess.Popen`` missed every other spelling."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Take ``preexec_fn``: it must be ``...with_parent()``.
PREEXEC = {
    "asyncio.create_subprocess_exec",
    "asyncio.create_subprocess_shell",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "subprocess.run",
}
# Take ``initializer``: it must be ``...die_with_parent`` (called in each worker).
INITIALIZER = {"concurrent.futures.ProcessPoolExecutor", "multiprocessing.Pool"}
# The child runs our target: the module must call ``die_with_parent`` (from that target).
TARGET = {"multiprocessing.Process"}
# No hook at all: never allowed.
NEVER = {
    "os.fork",
    "os.forkpty",
    "os.popen",
    "os.posix_spawn",
    "os.posix_spawnp",
    "os.system",
    "pty.spawn",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
}
CONTEXTS = {"multiprocessing.get_context"}  # its result stands for ``multiprocessing``


def _starts(name: str) -> bool:
    return name in PREEXEC | INITIALIZER | TARGET | NEVER or name.startswith("os.spawn")


class _Names(ast.NodeVisitor):
    """Local name -> the dotted name it stands for, from imports and ``get_context()``."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.names[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.names[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.names[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and self.dotted(node.value.func) in CONTEXTS:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.names[target.id] = "multiprocessing"

    def dotted(self, node: ast.expr) -> str | None:
        """The dotted name ``node`` stands for, or None when it is no imported name."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and self.dotted(node.func) in CONTEXTS:
            return "multiprocessing"
        return None


def _kept(name: str, call: ast.Call, tree: ast.Module) -> bool:
    given = {k.arg: ast.unparse(k.value) for k in call.keywords}
    if name in PREEXEC:
        return given.get("preexec_fn", "").endswith("with_parent()")
    if name in INITIALIZER:
        return given.get("initializer", "").endswith("die_with_parent")
    if name in TARGET:
        return any(
            isinstance(node, ast.Call) and ast.unparse(node.func).endswith("die_with_parent")
            for node in ast.walk(tree)
        )
    return False


def _annotations(tree: ast.Module) -> list[ast.expr]:
    found: list[ast.expr | None] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
    return [annotation for annotation in found if annotation is not None]


def starts_without_the_helper(path: Path) -> list[str]:
    """Where ``path`` starts a process (or hands a starting function on, e.g. to a thread)
    without making the child die with its parent."""
    tree = ast.parse(path.read_text())
    names = _Names()
    names.visit(tree)
    calls = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
    typing = {id(inner) for outer in _annotations(tree) for inner in ast.walk(outer)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing or not isinstance(node, ast.Name | ast.Attribute):
            continue  # ``subprocess.Popen[bytes]`` as a type starts nothing
        name = names.dotted(node)
        if name is None or not _starts(name):
            continue
        call = calls.get(id(node))
        if call is None or not _kept(name, call, tree):
            found.append(f"{path}:{node.lineno}")
    return sorted(set(found), key=lambda where: int(where.rsplit(":", 1)[1]))


def test_every_child_the_suite_and_the_bench_start_dies_with_its_parent() -> None:
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    assert [where for path in files for where in starts_without_the_helper(path)] == []


def test_the_check_finds_a_start_without_the_helper(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import subprocess\n"
        "subprocess.run(['true'], check=True)\n"
        "subprocess.Popen(['true'], preexec_fn=children.with_parent())\n"
    )
    assert starts_without_the_helper(script) == [f"{script}:2"]


def test_the_check_sees_every_spelling_the_old_regex_missed(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import asyncio, os, multiprocessing as mp, subprocess as sp\n"
        "from subprocess import Popen as P, check_output\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "P(['true'])\n"  # 4
        "check_output(['true'])\n"  # 5
        "sp.call(['true'])\n"  # 6
        "sp.check_call(['true'], preexec_fn=children.with_parent())\n"
        "asyncio.create_subprocess_shell('true')\n"  # 8
        "os.spawnl(os.P_WAIT, '/bin/true', 'true')\n"  # 9
        "os.system('true')\n"  # 10
        "mp.Process(target=print).start()\n"  # 11
        "ctx = mp.get_context('spawn')\n"
        "ctx.Process(target=print)\n"  # 13
        "ProcessPoolExecutor(2)\n"  # 14
        "ProcessPoolExecutor(2, initializer=children.die_with_parent)\n"
        "asyncio.to_thread(sp.run, ['true'])\n"  # 16: handed on, never checked
        "def f(p: sp.Popen[str]) -> sp.Popen[str]: ...\n"  # a type: starts nothing
    )
    assert starts_without_the_helper(script) == [
        f"{script}:{line}" for line in (4, 5, 6, 8, 9, 10, 11, 13, 14, 16)
    ]
