"""Every process the suite and the bench tools start dies with its parent
(``bench/children.py``): a killed pytest leaves no server holding a port or a database."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTS = {("subprocess", "Popen"), ("subprocess", "run"), ("asyncio", "create_subprocess_exec")}


def starts_without_the_helper(path: Path) -> list[str]:
    """Where ``path`` starts a process without ``preexec_fn=...with_parent()``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in STARTS
        ):
            continue
        given = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if not given.get("preexec_fn", "").endswith("with_parent()"):
            found.append(f"{path}:{node.lineno}")
    return found


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
