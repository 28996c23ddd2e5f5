"""Readers for the CI/CD files: the workflows, .gitlab-ci.yml and the Jenkinsfile's blocks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
GITLAB = ROOT / ".gitlab-ci.yml"
JENKINSFILE = ROOT / "Jenkinsfile"
SCRIPTS = ROOT / "deploy" / "pipelines"

SECRET_NAME = re.compile(r"pass(word|wd)?|token|secret|key|credential", re.IGNORECASE)
GITHUB_SECRET = re.compile(r"^\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")
GITLAB_VARIABLE = re.compile(r"^\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)$")
FLAG = {"0", "1", "true", "false", "yes", "no"}
SECRET_SHAPES = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bghp_[A-Za-z0-9]{20,}|\bgithub_pat_\w{20,}"
    r"|\bglpat-[\w-]{20,}|\bAKIA[0-9A-Z]{16}\b|\bxox[abp]-[\w-]{10,}"
)


def load_yaml(path: Path) -> dict[str, Any]:
    """One YAML file as a mapping."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def workflow(name: str) -> dict[str, Any]:
    """A GitHub workflow by file name."""
    return load_yaml(WORKFLOWS / name)


def triggers(flow: dict[str, Any]) -> dict[str, Any]:
    """A workflow's `on:` (YAML 1.1 reads the bare key as True)."""
    on = flow.get("on", flow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict)
    return on


def steps_running(job: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The steps of a job whose `run:` contains text."""
    return [step for step in job.get("steps", []) if text in str(step.get("run", ""))]


def secret_literals(node: Any, where: str = "") -> list[str]:
    """Where a secret-looking key holds a literal instead of a secret store reference.

    Allowed values: `${{ secrets.X }}` (GitHub), `$X` / `${X}` (GitLab's CI/CD variables),
    yes/no flags (e.g. MARIADB_ALLOW_EMPTY_ROOT_PASSWORD), and paths in keys ending in
    _FILE (where a secret file is written, not the secret).
    """
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}"
            if isinstance(value, (dict, list)):
                found += secret_literals(value, path)
            elif SECRET_NAME.search(str(key)) and not _allowed(str(key), value):
                found.append(f"{path} = {value!r}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += secret_literals(item, f"{where}[{index}]")
    return found


def _allowed(key: str, value: Any) -> bool:
    text = str(value).strip()
    return bool(
        GITHUB_SECRET.match(text)
        or GITLAB_VARIABLE.match(text)
        or text.lower() in FLAG
        or (key.upper().endswith("_FILE") and text.startswith("$"))
    )


def gitlab_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A GitLab job with its `extends` templates merged in (one level of keys, as GitLab)."""
    job = dict(config[name])
    parents = job.pop("extends", [])
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = gitlab_job(config, parent)
        for key, value in job.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        job = merged
    return job


def groovy_code(text: str) -> str:
    """The Jenkinsfile with comments blanked and string contents replaced by spaces.

    Brace matching and keyword searches then see only the code; offsets are kept.
    """
    out = list(text)
    i = 0
    while i < len(text):
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
        elif text.startswith("'''", i) or text.startswith('"""', i):
            quote = text[i : i + 3]
            end = text.index(quote, i + 3)
            out[i + 3 : end] = [c if c == "\n" else " " for c in text[i + 3 : end]]
            i = end + 3
        elif text[i] in "'\"":
            end = i + 1
            while text[end] != text[i]:
                end += 2 if text[end] == "\\" else 1
            out[i + 1 : end] = " " * (end - i - 1)
            i = end + 1
        else:
            i += 1
    return "".join(out)


def groovy_strings(text: str, quote: str) -> list[str]:
    """The contents of the Jenkinsfile's string literals with one quote character."""
    code = groovy_code(text)
    strings = []
    i = 0
    while i < len(code):
        if code.startswith(quote * 3, i):
            end = code.index(quote * 3, i + 3)
            strings.append(text[i + 3 : end])
            i = end + 3
        elif code[i] == quote:
            end = code.index(quote, i + 1)
            strings.append(text[i + 1 : end])
            i = end + 1
        else:
            i += 1
    return strings


def block_after(text: str, start: int) -> str:
    """The `{ ... }` block that opens at or after offset start (braces inside strings and
    comments are ignored)."""
    code = groovy_code(text)
    opening = code.index("{", start)
    depth = 0
    for i in range(opening, len(code)):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        if depth == 0:
            return text[opening : i + 1]
    raise AssertionError("unbalanced braces")


def jenkins_stages(text: str) -> dict[str, str]:
    """The Jenkinsfile's stages by name, each with its block, in order of appearance."""
    code = groovy_code(text)
    stages = {}
    for match in re.finditer(r"\bstage\s*\(", code):
        name = re.match(r"\(\s*'([^']+)'\s*\)", text[match.end() - 1 :])
        assert name, f"a stage without a literal name at offset {match.start()}"
        stages[name.group(1)] = block_after(text, match.end())
    return stages
