"""The CI/CD pipelines: GitHub Actions (actionlint and structure), GitLab CI and Jenkins
(structure). The deploy scripts they share are run in test_pipeline_scripts.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.commands import run
from tests.deploy.pipeline_files import (
    GITLAB,
    JENKINSFILE,
    ROOT,
    SCRIPTS,
    SECRET_SHAPES,
    WORKFLOWS,
    gitlab_job,
    groovy_code,
    groovy_strings,
    jenkins_stages,
    load_yaml,
    secret_literals,
    steps_running,
    triggers,
    workflow,
)
from tests.support import required_file_missing

STAGES = ["lint", "test", "build", "deploy-dev", "deploy-prod"]
ACTIONLINT = Path(sys.executable).parent / "actionlint"
PIPELINE_FILES = [
    *sorted(WORKFLOWS.glob("*.yml")),
    GITLAB,
    JENKINSFILE,
    *sorted(SCRIPTS.glob("*.sh")),
]


def _jobs(name: str) -> dict[str, dict[str, Any]]:
    return workflow(name)["jobs"]


def _release_jobs(name: str) -> dict[str, dict[str, Any]]:
    """The jobs of a workflow that touch a host."""
    return {
        job_name: job
        for job_name, job in _jobs(name).items()
        if steps_running(job, "release-remote.sh")
    }


# GitHub Actions


def _actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        required_file_missing(ACTIONLINT, "actionlint checks the workflows (test extras)")
    return run([str(ACTIONLINT), "-no-color", *args], timeout=120, cwd=cwd)


def test_actionlint_passes_on_the_workflows() -> None:
    files = sorted(str(path.relative_to(ROOT)) for path in WORKFLOWS.glob("*.yml"))
    assert files == [
        ".github/workflows/ci.yml",
        ".github/workflows/deploy-dev.yml",
        ".github/workflows/deploy-prod.yml",
    ]
    result = _actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  deploy:\n"
        "    runs-on: ubuntu-24.04\n"
        "    needs: missing-job\n"
        "    env:\n"
        "      KEY_FILE: ${{ runner.temp }}/key\n"
        "    steps:\n"
        "      - run: echo ${{ secrets }}\n"
    )
    result = _actionlint(str(broken), cwd=tmp_path)
    assert result.returncode != 0
    assert "missing-job" in result.stdout
    assert '"runner" is not allowed' in result.stdout


def test_ci_runs_on_every_push_and_pull_request_and_inside_the_deploys() -> None:
    on = triggers(workflow("ci.yml"))
    assert {"push", "pull_request", "workflow_call"} <= set(on)
    # develop and main run it inside their deploy workflow, before anything is built.
    assert set(on["push"].get("branches-ignore", [])) == {"develop", "main"}
    for name in ("deploy-dev.yml", "deploy-prod.yml"):
        jobs = _jobs(name)
        callers = [job for job in jobs.values() if job.get("uses") == "./.github/workflows/ci.yml"]
        assert len(callers) == 1, name
        ci_job = next(n for n, job in jobs.items() if job.get("uses"))
        assert jobs["build"]["needs"] == ci_job, name


def test_ci_tests_run_scripts_test_with_mariadb_and_redis_service_containers() -> None:
    job = _jobs("ci.yml")["test"]
    services = job["services"]
    mariadb, redis = services["mariadb"], services["redis"]
    assert mariadb["image"] == "mariadb:10.11"
    assert mariadb["env"]["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"] in ("1", "yes")
    assert "3306:3306" in mariadb["ports"]
    assert redis["image"] == "redis:7"
    assert "6379:6379" in redis["ports"]
    for service in (mariadb, redis):
        assert "--health-cmd" in service["options"]
    assert str(job["env"]["CI"]).lower() == "true"
    (step,) = steps_running(job, "scripts/test")
    assert step["run"].startswith("scripts/test")
    # scripts/test's own browser install cannot work on Ubuntu: the job provides Chromium.
    assert steps_running(job, "/usr/bin/chromium")
    # The fault and binlog tests start mariadbd and redis-server of their own.
    (tools,) = steps_running(job, "apt-get install")
    for package in ("mariadb-server", "mariadb-client", "mariadb-backup", "redis-server"):
        assert package in tools["run"]
    assert "policy-rc.d" in tools["run"], "the packages' services would take the ports"


def test_ci_lints_types_and_audits() -> None:
    jobs = _jobs("ci.yml")
    lint = jobs["lint"]
    for command in ("ruff check", "ruff format --check", "mypy"):
        assert steps_running(lint, command), command
    audit = jobs["audit"]
    assert steps_running(audit, "pip install --quiet pip-audit")
    (run,) = [s for s in audit["steps"] if str(s.get("run", "")).startswith(".venv/bin/pip-audit")]
    assert "--ignore-vuln" not in run["run"]


def test_every_workflow_pins_actions_python_timeouts_and_least_privilege() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        flow = load_yaml(path)
        assert flow["permissions"] == {"contents": "read"}, path.name
        for name, job in flow["jobs"].items():
            where = f"{path.name}:{name}"
            if "uses" in job:  # a called workflow has its own jobs and timeouts
                assert job["uses"].startswith("./"), where
                continue
            assert 0 < job["timeout-minutes"] <= 60, where
            permissions = job.get("permissions", {})
            assert permissions != "write-all", where
            writes = {scope for scope, level in permissions.items() if level == "write"}
            assert writes <= {"packages"}, where
            if writes:
                assert steps_running(job, "build-image.sh"), f"{where} writes but builds nothing"
            for step in job["steps"]:
                action = step.get("uses")
                if action:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+|[0-9a-f]{40})", action), action
                if str(action).startswith("actions/setup-python"):
                    assert step["with"]["python-version"] == "3.11", where


def test_deploy_dev_runs_on_pushes_to_develop_only() -> None:
    assert triggers(workflow("deploy-dev.yml")) == {"push": {"branches": ["develop"]}}
    (job,) = _release_jobs("deploy-dev.yml").values()
    assert steps_running(job, "smoke.sh")


def test_deploy_prod_runs_on_pushes_to_main_only_after_the_production_approval() -> None:
    assert triggers(workflow("deploy-prod.yml")) == {"push": {"branches": ["main"]}}
    releases = _release_jobs("deploy-prod.yml")
    assert releases, "deploy-prod releases nothing"
    for job in releases.values():
        environment = job["environment"]
        name = environment["name"] if isinstance(environment, dict) else environment
        assert name == "production"
    # Production's secrets reach only the jobs behind the approval.
    others = {n: job for n, job in _jobs("deploy-prod.yml").items() if n not in releases}
    assert "secrets.PROD_" not in str(others)


def test_prod_releases_blue_green_with_a_rollback_path() -> None:
    (job,) = _release_jobs("deploy-prod.yml").values()
    steps = job["steps"]
    (release,) = steps_running(job, "release-remote.sh deploy")
    assert "release-remote.sh deploy blue-green" in release["run"]
    smoke = steps_running(job, "smoke.sh")[0]
    assert "if" not in smoke
    (rollback,) = [s for s in steps if "release-remote.sh rollback" in str(s.get("run", ""))]
    assert steps.index(release) < steps.index(smoke) < steps.index(rollback)
    assert "failure()" in rollback["if"]
    # It restores what was live before, read before the release.
    (previous,) = steps_running(job, "release-remote.sh current")
    assert steps.index(previous) < steps.index(release)
    assert f"steps.{previous['id']}.outputs" in str(rollback)
    # And the script runs the release script, which rolls back on its own.
    script = (SCRIPTS / "release-remote.sh").read_text()
    assert "deploy/release/release.sh" in script


def test_deploy_jobs_take_turns_and_are_never_cancelled_midway() -> None:
    groups = {}
    for name in ("deploy-dev.yml", "deploy-prod.yml"):
        for job_name, job in _release_jobs(name).items():
            concurrency = job["concurrency"]
            assert concurrency["cancel-in-progress"] is False, f"{name}:{job_name}"
            # One group for every run: a ref or sha in it would let two releases overlap.
            assert "${{" not in concurrency["group"]
            groups[name] = concurrency["group"]
    assert len(set(groups.values())) == 2


def test_ssh_keys_come_from_secrets_into_private_files() -> None:
    for name in ("deploy-dev.yml", "deploy-prod.yml"):
        for job in _release_jobs(name).values():
            (setup,) = steps_running(job, "known_hosts")
            assert "install -m 600 /dev/null" in setup["run"]
            assert setup["env"]["SSH_KNOWN_HOSTS"].startswith("${{ secrets.")


# Every system


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_or_host_key_check_bypass_in_the_pipelines(path: Path) -> None:
    text = path.read_text()
    assert not SECRET_SHAPES.search(text)
    assert not re.search(r"StrictHostKeyChecking\s*=?\s*(no|off|accept-new)", text)
    if path.suffix in (".yml", ".yaml"):
        assert secret_literals(load_yaml(path)) == []


def test_the_secret_check_flags_literals() -> None:
    assert secret_literals({"env": {"DB_PASSWORD": "hunter2", "API_TOKEN": "${{ secrets.X }}"}})
    assert secret_literals({"variables": {"ssh_private_key": "abc"}})
    assert secret_literals({"with": {"password": "${{ github.sha }}"}})
    assert not secret_literals({"env": {"REGISTRY_PASSWORD": "$CI_REGISTRY_PASSWORD"}})


# GitLab CI


def test_gitlab_has_the_same_stages_and_every_job_uses_one() -> None:
    config = load_yaml(GITLAB)
    assert config["stages"] == STAGES
    jobs = [name for name in config if name not in {"stages", "default", "variables", "workflow"}]
    for name in jobs:
        if not name.startswith("."):
            assert gitlab_job(config, name)["stage"] in STAGES, name


def test_gitlab_tests_run_next_to_mariadb_and_redis_services() -> None:
    config = load_yaml(GITLAB)
    job = gitlab_job(config, "test")
    services = {s["name"]: s for s in job["services"]}
    assert set(services) == {"mariadb:10.11", "redis:7"}
    assert services["mariadb:10.11"]["variables"]["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"] == "1"
    # The suite reaches the services by their aliases.
    variables = job["variables"]
    assert f"@{services['mariadb:10.11']['alias']}:3306" in variables["CMSCHAT_TEST_MARIADB"]
    assert f"//{services['redis:7']['alias']}:6379/" in variables["CMSCHAT_TEST_REDIS"]
    assert variables["CI"] == "true"
    assert any(line.startswith("scripts/test") for line in job["script"])
    lint = gitlab_job(config, "lint")["script"]
    assert any("ruff check" in line for line in lint) and ".venv/bin/mypy" in lint
    assert any("pip-audit" in line for line in gitlab_job(config, "pip-audit")["script"])


def test_gitlab_production_is_manual_protected_and_main_only() -> None:
    config = load_yaml(GITLAB)
    prod = gitlab_job(config, "deploy-prod")
    assert prod["stage"] == "deploy-prod"
    assert prod["environment"]["name"] == "production"
    assert prod["resource_group"]
    (rule,) = prod["rules"]
    assert rule["if"].replace(" ", "") == '$CI_COMMIT_BRANCH=="main"'
    assert rule["when"] == "manual"
    # allow_failure: true would let the pipeline pass without anyone approving.
    assert rule["allow_failure"] is False
    assert any("release-remote.sh ship blue-green" in line for line in prod["script"])
    assert "install -m 600" in " ".join(prod["before_script"])

    dev = gitlab_job(config, "deploy-dev")
    assert dev["environment"]["name"] == "dev"
    (rule,) = dev["rules"]
    assert rule["if"].replace(" ", "") == '$CI_COMMIT_BRANCH=="develop"'
    assert rule.get("when", "on_success") == "on_success"
    assert any("release-remote.sh ship" in line for line in dev["script"])

    build = gitlab_job(config, "build")
    (rule,) = build["rules"]
    assert "develop" in rule["if"] and "main" in rule["if"]
    assert any("build-image.sh" in line for line in build["script"])


# Jenkins


def test_jenkins_has_the_same_stages_with_an_approval_before_production() -> None:
    text = JENKINSFILE.read_text()
    code = groovy_code(text)
    assert re.search(r"^pipeline\s*\{", code, re.MULTILINE), "not a declarative pipeline"
    stages = jenkins_stages(text)
    order = [name for name in stages if name in [*STAGES, "approval"]]
    assert order == ["lint", "test", "build", "deploy-dev", "approval", "deploy-prod"]

    approval = stages["approval"]
    assert re.search(r"\binput\s*\(", groovy_code(approval)), "no input step"
    assert re.search(r"submitter:\s*'[\w-]+'", approval), "anyone could approve"
    assert re.search(r"when\s*\{[^}]*branch\s+'main'", approval)
    assert re.search(r"agent\s+none", approval), "waiting would hold an executor"

    prod = stages["deploy-prod"]
    assert re.search(r"when\s*\{[^}]*branch\s+'main'", prod)
    assert "release-remote.sh ship blue-green" in prod
    assert "lock(resource:" in prod
    dev = stages["deploy-dev"]
    assert re.search(r"when\s*\{[^}]*branch\s+'develop'", dev)
    assert "release-remote.sh ship" in dev

    tests = stages["tests"]
    assert "docker.image('mariadb:10.11')" in tests and "docker.image('redis:7')" in tests
    assert "scripts/test" in tests
    assert "pip-audit" in stages["pip-audit"]
    for command in ("ruff check", "ruff format --check", "mypy"):
        assert command in stages["lint"]


def test_jenkins_secrets_come_from_the_credentials_store_unexposed_to_groovy() -> None:
    text = JENKINSFILE.read_text()
    stages = jenkins_stages(text)
    assert "credentials('cmschat-registry')" in stages["build"]
    for name in ("deploy-dev", "deploy-prod"):
        block = stages[name]
        assert "withCredentials(" in block
        assert re.search(r"sshUserPrivateKey\(credentialsId: '[\w-]+'", block)
        assert re.search(r"file\(credentialsId: '[\w-]+-known-hosts'", block)
    # Secrets are read by the shell from its environment; a double-quoted Groovy string
    # would interpolate them into the script text (and the build log's command echo).
    secret_variables = re.compile(r"_PSW|_USR|PASSWORD|DEPLOY_|SSH_KEY")
    for string in groovy_strings(text, '"'):
        assert not secret_variables.search(string), string


def test_the_operator_guide_names_every_setting_the_pipelines_read() -> None:
    guide = (ROOT / "docs" / "pipelines.md").read_text()
    workflows = "".join(path.read_text() for path in WORKFLOWS.glob("*.yml"))
    names = set(re.findall(r"\$\{\{\s*(?:secrets|vars)\.(\w+)", workflows)) - {"GITHUB_TOKEN"}
    assert names >= {"PROD_SSH_PRIVATE_KEY", "PROD_SSH_KNOWN_HOSTS", "PROD_URL", "DEV_URL"}
    jenkins = JENKINSFILE.read_text()
    names |= set(re.findall(r"credentialsId: '([\w-]+)'", jenkins))
    names |= set(re.findall(r"credentials\('([\w-]+)'\)", jenkins))
    names |= set(re.findall(r"\$\{?(CMSCHAT_[A-Z_]+)", jenkins))
    gitlab = GITLAB.read_text()
    names |= {"DEPLOY_HOST", "DEPLOY_USER", "SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS"}
    names |= set(re.findall(r"\$\{?((?:DEV|PROD)_\w+)", gitlab))
    missing = sorted(name for name in names if f"`{name}`" not in guide)
    assert missing == [], "docs/pipelines.md does not explain these"
    assert "Required reviewers" in guide and "Protected environments" in guide
