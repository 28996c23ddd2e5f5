"""The ``cmschat`` command as an operator runs it: a real process, a clean environment.

Every test runs ``python -m cmschat`` in ``tmp_path`` with no ``CMSCHAT_*`` variable
inherited, so the embedded defaults (``./var/``) land in the temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import children
from tests.processes import (
    COMMAND_TIMEOUT,
    Server,
    clean_env,
    cmschat,
    random_password,
    running_server,
)
from tests.support import PASSWORD, required_file_missing

# Cheap bcrypt (only allowed with CMSCHAT_ENVIRONMENT=test) keeps each command fast.
FAST = {"CMSCHAT_ENVIRONMENT": "test", "CMSCHAT_AUTH__BCRYPT_ROUNDS": "4"}
# The shared folder sits beside the checkout; CMSCHAT_TEST_SHARED points elsewhere (a worktree).
SHARED = Path(
    os.environ.get("CMSCHAT_TEST_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
CONTRACT_SMOKE = SHARED / "tools" / "contract-smoke"
ONE_TIME_PASSWORD = re.compile(r"one-time password: (\S+)")


# --- helpers -------------------------------------------------------------------------


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    """An operator mistake never shows a Python traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *needles: str, status: int | None = None
) -> str:
    """Non-zero exit, exactly one non-empty stderr line containing every needle; returns it."""
    assert_no_traceback(result)
    if status is None:
        assert result.returncode != 0, result
    else:
        assert result.returncode == status, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def one_time_password(stdout: str) -> str:
    """The first admin's password, which must be printed exactly once."""
    found = ONE_TIME_PASSWORD.findall(stdout)
    assert len(found) == 1, stdout
    password: str = found[0]
    assert stdout.count(password) == 1, stdout
    return password


def login(http: httpx.Client, username: str, password: str) -> tuple[dict[str, str], Any]:
    """Sign in; returns the Authorization header and the user object."""
    response = http.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return {"Authorization": f"Bearer {body['access_token']}"}, body["user"]


def change_first_admin_password(server: Server) -> str:
    """Sign in with the one-time password, check what it allows, set a new one; returns it."""
    first = one_time_password(server.stdout())
    new = random_password()
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        auth, user = login(http, "admin", first)
        assert user["username"] == "admin"
        assert user["role"] == "admin"
        assert user["must_change_password"] is True
        assert http.get("/api/v1/admin/users", headers=auth).status_code == 403

        response = http.post(
            "/api/v1/me/password",
            json={"current_password": first, "new_password": new},
            headers=auth,
        )
        assert response.status_code == 200, response.text
        assert response.json()["must_change_password"] is False
        assert http.get("/api/v1/admin/users", headers=auth).status_code == 200
    return new


def json_log_records(stderr: str) -> list[dict[str, Any]]:
    """Parse stderr as JSON lines (ECS): every non-empty line is one record."""
    records = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        assert "log.level" in record, line
        assert "@timestamp" in record, line
        records.append(record)
    return records


# --- commands, no server ---------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = cmschat(tmp_path, "--help", env=clean_env())
    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "user"):
        assert re.search(rf"\b{command}\b", result.stdout), result.stdout


def test_migrate_creates_the_embedded_database_and_repeats_as_a_no_op(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    first = cmschat(tmp_path, "migrate", env=env)
    assert first.returncode == 0, first.stderr
    database = tmp_path / "var" / "cmschat.db"
    assert database.is_file()
    size = database.stat().st_size

    again = cmschat(tmp_path, "migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert_no_traceback(again)
    assert database.stat().st_size == size


def test_user_create_and_a_taken_name(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    args = ("user", "create", "bob", "--role", "agent", "--password-stdin")

    created = cmschat(tmp_path, *args, env=env, stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert "bob" in created.stdout
    assert PASSWORD not in created.stdout + created.stderr

    again = cmschat(tmp_path, *args, env=env, stdin=PASSWORD + "\n")
    line = assert_one_line_error(again, "bob", "taken", status=1)
    assert line.startswith("cmschat: error:")


@pytest.mark.parametrize(
    ("args", "stdin", "status", "needle"),
    [
        pytest.param(("--role", "agent"), "password\n", 1, "password", id="weak-password"),
        pytest.param(("--role", "agent"), "", 1, "stdin", id="empty-stdin"),
        pytest.param(("--role", "agent"), "\n", 1, "stdin", id="blank-line"),
        pytest.param(("--role", "boss"), PASSWORD + "\n", 2, "--role", id="bad-role"),
    ],
)
def test_user_create_refusals_are_one_line(
    tmp_path: Path, args: tuple[str, ...], stdin: str, status: int, needle: str
) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    result = cmschat(
        tmp_path, "user", "create", "carol", *args, "--password-stdin", env=env, stdin=stdin
    )
    line = assert_one_line_error(result, needle, status=status)
    assert line.startswith("cmschat: error:")


BAD_SETTINGS = [
    ("CMSCHAT_DATABASE_URL", "postgres://x", {}),
    ("CMSCHAT_LOG_LEVEL", "LOUD", {}),
    ("CMSCHAT_CORS_ORIGINS", "*", {}),
    ("CMSCHAT_CORS_ORIGINS", "chat.example.com", {}),
    ("CMSCHAT_ENVIRONMENT", "staging", {}),
    ("CMSCHAT_SHUTDOWN_GRACE_SECONDS", "0", {}),
    ("CMSCHAT_AUTH__BCRYPT_ROUNDS", "lots", {}),
    ("CMSCHAT_GIL_SWITCH_INTERVAL_MS", "0", {}),
    ("CMSCHAT_GIL_SWITCH_INTERVAL_MS", "1000", {}),
    ("CMSCHAT_GIL_SWITCH_INTERVAL_MS", "fast", {}),
    ("CMSCHAT_GIL_SWITCH_INTERVAL_MS", "nan", {}),
    # Cheap hashing outside tests is refused, and the message names the variable.
    ("CMSCHAT_AUTH__BCRYPT_ROUNDS", "4", {"CMSCHAT_ENVIRONMENT": "production"}),
    ("CMSCHAT_SECRET_KEY", "changeme", {"CMSCHAT_ENVIRONMENT": "production"}),
    ("CMSCHAT_SECRET_KEY", "x" * 20, {"CMSCHAT_ENVIRONMENT": "production"}),
]


@pytest.mark.parametrize("command", ["migrate", "serve"])
@pytest.mark.parametrize(
    ("variable", "value", "extra"),
    [pytest.param(*case, id=f"{case[0]}={case[1][:12]}") for case in BAD_SETTINGS],
)
def test_a_bad_setting_stops_with_one_line_naming_it(
    tmp_path: Path, command: str, variable: str, value: str, extra: dict[str, str]
) -> None:
    result = cmschat(tmp_path, command, env=clean_env(**extra, **{variable: value}))
    line = assert_one_line_error(result, variable)
    assert line.startswith("cmschat: error:")
    assert not (tmp_path / "var").exists()


def test_a_placeholder_secret_is_accepted_in_development(tmp_path: Path) -> None:
    env = clean_env(CMSCHAT_ENVIRONMENT="development", CMSCHAT_SECRET_KEY="changeme")
    result = cmschat(tmp_path, "migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "cmschat.db").is_file()


def test_an_unreachable_mariadb_is_one_line(tmp_path: Path) -> None:
    env = clean_env(
        CMSCHAT_DATABASE_URL="mysql+asyncmy://u:p@127.0.0.1:1/x",
        CMSCHAT_SECRET_KEY=secrets.token_urlsafe(36),  # 48 characters
    )
    result = cmschat(tmp_path, "migrate", env=env)
    line = assert_one_line_error(result)
    assert line.startswith("cmschat: error: database: "), line
    assert ":p@" not in line  # the URL's password is not echoed


# --- serve -----------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_first_run_then_restart(tmp_path: Path) -> None:
    env = clean_env(**FAST)

    with running_server(tmp_path, env, "first") as server:
        first_password = one_time_password(server.stdout())
        new_password = change_first_admin_password(server)
        response = httpx.get(
            server.base_url + "/healthz", headers={"X-Request-ID": "cli-test-1"}, timeout=5
        )
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        assert len(request_id) == 32  # the server's own; the caller's is logged beside it
        assert server.stop() == 0
        stderr = server.stderr()

    # The logs: JSON lines, never the one-time password, requests carry their id.
    assert first_password not in stderr
    assert new_password not in stderr
    records = json_log_records(stderr)
    tagged = [record for record in records if "cli-test-1" in json.dumps(record)]
    assert tagged, stderr
    assert tagged[0]["http"]["request"]["id"] == request_id
    assert tagged[0]["labels"]["client_request_id"] == "cli-test-1"
    assert tagged[0]["url"]["path"] == "/healthz"
    # SIGTERM went through the graceful shutdown, not an abrupt exit.
    assert "Application shutdown complete." in [record["message"] for record in records]

    with running_server(tmp_path, env, "second") as server:
        assert "one-time password" not in server.stdout()
        assert first_password not in server.stdout()
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            _, user = login(http, "admin", new_password)
            assert user["must_change_password"] is False
            bad = http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": first_password}
            )
            assert bad.status_code == 401
        assert server.stop() == 0
        json_log_records(server.stderr())


@pytest.mark.slow
def test_serve_sets_and_logs_the_gil_switch_interval(tmp_path: Path) -> None:
    env = clean_env(**FAST, CMSCHAT_GIL_SWITCH_INTERVAL_MS="0.5")
    with running_server(tmp_path, env, "switch") as server:
        assert server.stop() == 0
        messages = [record["message"] for record in json_log_records(server.stderr())]
    # Logged from the value the interpreter reports after setting it.
    assert messages.count("GIL switch interval: 0.5 ms (Python's default: 5 ms)") == 1, messages


# Every check of the contract smoke: the interface other teams and scripts rely on.
SMOKE_MUST_PASS = [
    "GET /healthz is 200",
    "GET /readyz is 200",
    "OpenAPI at /api/v1/openapi.json",
    "bad login is 401 with {error: {code, message}}",
    "login returns access_token, token_type, expires_at, user",
    "GET /me has the user fields",
    "API responses carry nosniff and a CSP",
    "admin creates a user (201, user fields)",
    "the new user can log in",
    "a member gets 403 on /admin/users",
    "GET /admin/users is {items, next_cursor}",
    "POST /rooms creates a group room with the room fields",
    "POST /rooms/{id}/messages is 201 with the message fields",
    "repeating client_id returns the same message",
    "content round-trips exactly",
    "content_html has no raw <b>x</b> from the user",
    "seq is consecutive per room",
    "history is {items, next_cursor}, newest first",
    "GET /rooms lists the room with unread_count and last_message",
    "a non-member gets 404 (or 403) for the room's messages",
    "logout revokes the token",
    "unknown routes are JSON 404 with an error object",
]


@pytest.fixture(scope="module")
def contract_smoke_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the contract smoke prints against a first-run server whose admin set a password."""
    if not CONTRACT_SMOKE.is_file():
        required_file_missing(CONTRACT_SMOKE, "the contract smoke tool is absent")
    directory = tmp_path_factory.mktemp("smoke")
    with running_server(directory, clean_env(**FAST), "smoke") as server:
        new_password = change_first_admin_password(server)
        smoke = subprocess.run(  # noqa: S603 - the project's own smoke tool
            [sys.executable, str(CONTRACT_SMOKE), server.base_url, "admin"],
            input=new_password + "\n",
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            preexec_fn=children.with_parent(),
        )
        assert server.stop() == 0
    print(smoke.stdout, smoke.stderr, sep="\n")  # shown with -s, or when a check fails
    assert "Traceback" not in smoke.stderr, smoke.stderr
    return smoke.stdout


@pytest.mark.slow
@pytest.mark.parametrize("check", SMOKE_MUST_PASS)
def test_contract_smoke_check_passes(contract_smoke_output: str, check: str) -> None:
    lines = contract_smoke_output.splitlines()
    assert lines[-1].endswith(" 0 failed"), contract_smoke_output
    assert f"PASS {check}" in lines, contract_smoke_output
    assert not any(line.startswith(f"FAIL {check}") for line in lines), contract_smoke_output
