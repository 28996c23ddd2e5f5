"""``cmschat user list`` and ``user reset-password``, run as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench import children
from cmschat.realtime.connections import CLOSE_SESSION_ENDED
from tests import support
from tests.cli.test_cli import FAST, assert_no_traceback, assert_one_line_error, one_time_password
from tests.processes import (
    COMMAND_TIMEOUT,
    clean_env,
    cmschat,
    random_password,
    running_server,
)
from tests.realtime.test_multi_instance import live
from tests.realtime.test_revocation import closed_with
from tests.realtime.wsclient import ws_client
from tests.support import PASSWORD

CHECK_SECONDS = 1
USER_FIELDS = {
    "id",
    "username",
    "display_name",
    "role",
    "is_active",
    "must_change_password",
    "created_at",
}


def create(directory: Path, env: dict[str, str], name: str, role: str, password: str) -> None:
    made = cmschat(
        directory, "user", "create", name, "--role", role, "--password-stdin", env=env,
        stdin=password + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr


def listed(directory: Path, env: dict[str, str], *args: str) -> list[dict[str, object]]:
    result = cmschat(directory, "user", "list", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    users: list[dict[str, object]] = json.loads(result.stdout)
    return users


async def login(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"username": name, "password": password})


def bearer(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# --- list --------------------------------------------------------------------------------


def test_user_list_table_json_and_filters(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    # Created out of name order: the listing sorts by username, not by id.
    create(tmp_path, env, "zoe", "admin", PASSWORD)
    create(tmp_path, env, "bob", "agent", PASSWORD)
    generated = cmschat(tmp_path, "user", "create", "mia", env=env)
    assert generated.returncode == 0, generated.stderr
    assert cmschat(tmp_path, "user", "disable", "mia", env=env).returncode == 0

    table = cmschat(tmp_path, "user", "list", env=env)
    assert table.returncode == 0, table.stderr
    assert_no_traceback(table)
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["USERNAME", "ROLE", "ACTIVE", "MUST", "CHANGE", "PASSWORD",
                              "CREATED", "(UTC)"]  # fmt: skip
    assert [row.split()[:4] for row in rows] == [
        ["bob", "agent", "yes", "no"],
        ["zoe", "admin", "yes", "no"],
    ]  # the disabled account only with --all
    everyone = cmschat(tmp_path, "user", "list", "--all", env=env)
    assert [row.split()[:4] for row in everyone.stdout.splitlines()[1:]] == [
        ["bob", "agent", "yes", "no"],
        ["mia", "member", "no", "yes"],
        ["zoe", "admin", "yes", "no"],
    ]

    users = listed(tmp_path, env, "--all")
    assert [user["username"] for user in users] == ["bob", "mia", "zoe"]
    for user in users:
        assert user.keys() >= USER_FIELDS, user
        assert not any("password_hash" in key for key in user)
    mia = users[1]
    assert (mia["role"], mia["is_active"], mia["must_change_password"]) == ("member", False, True)
    assert isinstance(mia["id"], int) and str(mia["created_at"]).endswith("Z")

    assert [user["username"] for user in listed(tmp_path, env)] == ["bob", "zoe"]
    assert [user["username"] for user in listed(tmp_path, env, "--role", "agent")] == ["bob"]
    assert listed(tmp_path, env, "--role", "member") == []
    assert [user["username"] for user in listed(tmp_path, env, "--role", "member", "--all")] == [
        "mia"
    ]
    assert_one_line_error(cmschat(tmp_path, "user", "list", "--role", "boss", env=env), "--role")


def test_user_list_refuses_without_a_database(tmp_path: Path) -> None:
    result = cmschat(tmp_path, "user", "list", env=clean_env(**FAST))
    assert_one_line_error(result, "no cmschat database", status=1)
    assert not (tmp_path / "var").exists()


# --- reset-password --------------------------------------------------------------------


@pytest.mark.slow
async def test_reset_password_generates_a_one_time_password_and_ends_every_session(
    tmp_path: Path,
) -> None:
    # One embedded instance, no Redis: the server notices the ended sessions at its check.
    env = clean_env(**FAST, CMSCHAT_REALTIME__SESSION_CHECK_SECONDS=str(CHECK_SECONDS))
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    create(tmp_path, env, "bob", "member", PASSWORD)
    root_password = random_password()
    create(tmp_path, env, "root", "admin", root_password)
    with running_server(tmp_path, env, "serve") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            first = bearer(await login(http, "bob", PASSWORD))
            second = bearer(await login(http, "bob", PASSWORD))
            token = first["Authorization"].removeprefix("Bearer ")
            async with ws_client(live(server), token) as ws:
                reset = cmschat(tmp_path, "user", "reset-password", "BOB", env=env)
                assert reset.returncode == 0, reset.stderr
                assert "'bob'" in reset.stdout
                new = one_time_password(reset.stdout)  # printed exactly once
                assert new not in reset.stderr
                code, _, _ = await closed_with(ws, within=CHECK_SECONDS + 2)
            assert code == CLOSE_SESSION_ENDED
            for old_session in (first, second):
                assert (await http.get("/api/v1/me", headers=old_session)).status_code == 401
            assert (await login(http, "bob", PASSWORD)).status_code == 401
            signed_in = await login(http, "bob", new)
            assert signed_in.status_code == 200, signed_in.text
            assert signed_in.json()["user"]["must_change_password"] is True

            admin = bearer(await login(http, "root", root_password))
            trail = await http.get(
                "/api/v1/admin/audit", params={"action": "user.password_reset"}, headers=admin
            )
            assert trail.status_code == 200, trail.text
            [event] = trail.json()["items"]
            assert (event["actor"], event["target_type"]) == ("system:cli", "user")
            assert event["target_id"] == str(signed_in.json()["user"]["id"])
            assert event["changes"]["generated"] is True
            assert event["changes"]["sessions_ended"] == 2
            assert new not in trail.text


@pytest.mark.slow
async def test_reset_password_from_stdin_closes_sockets_at_once_through_redis(
    tmp_path: Path, redis_prefix: str
) -> None:
    # The session check is far off: only the published event can close the socket in time.
    env = clean_env(
        **FAST,
        CMSCHAT_REDIS_URL=support.REDIS_URL,
        CMSCHAT_REDIS_PREFIX=redis_prefix,
        CMSCHAT_REALTIME__SESSION_CHECK_SECONDS="300",
    )
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    create(tmp_path, env, "bob", "member", PASSWORD)
    chosen = random_password()
    with running_server(tmp_path, env, "serve") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            token = bearer(await login(http, "bob", PASSWORD))["Authorization"].split()[1]
            async with ws_client(live(server), token) as ws:
                reset = cmschat(
                    tmp_path, "user", "reset-password", "bob", "--password-stdin", env=env,
                    stdin=chosen + "\n",
                )  # fmt: skip
                assert reset.returncode == 0, reset.stderr
                assert "one-time password" not in reset.stdout
                assert chosen not in reset.stdout + reset.stderr
                code, reason, _ = await closed_with(ws, within=5)
            assert (code, reason) == (CLOSE_SESSION_ENDED, "password_reset")
            assert (await login(http, "bob", PASSWORD)).status_code == 401
            signed_in = await login(http, "bob", chosen)
            assert signed_in.status_code == 200, signed_in.text
            assert signed_in.json()["user"]["must_change_password"] is True


def test_reset_password_refusals_are_one_line(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    nowhere = cmschat(tmp_path, "user", "reset-password", "bob", env=env)
    assert_one_line_error(nowhere, "no cmschat database", status=1)
    assert not (tmp_path / "var").exists()

    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    create(tmp_path, env, "bob", "member", PASSWORD)
    unknown = cmschat(tmp_path, "user", "reset-password", "nobody", env=env)
    line = assert_one_line_error(unknown, "nobody", status=1)
    assert line.startswith("cmschat: error: ")
    assert "one-time password" not in unknown.stdout

    def reset_to(password: str) -> str:
        result = cmschat(
            tmp_path, "user", "reset-password", "bob", "--password-stdin", env=env,
            stdin=password + "\n",
        )  # fmt: skip
        return assert_one_line_error(result, status=1)

    assert "at least" in reset_to("short")
    assert "username" in reset_to("bob-" + random_password())
    assert "no password on stdin" in reset_to("")
    # Nothing was changed by the refused resets.
    [bob] = listed(tmp_path, env)
    assert bob["must_change_password"] is False


def test_arguments_and_passwords_that_are_not_utf8_are_refused_in_one_line(
    tmp_path: Path,
) -> None:
    env = clean_env(**FAST)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    # Invalid UTF-8 in argv reaches Python as lone surrogates; subprocess writes them back
    # as the same bytes (here: 0xff).
    named = cmschat(
        tmp_path, "user", "create", "bob", "--display-name", "B\udcffb", "--password-stdin",
        env=env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert_one_line_error(named, "argument is not valid UTF-8", status=1)
    typed = subprocess.run(
        [sys.executable, "-m", "cmschat", "user", "create", "bob", "--password-stdin"],
        cwd=tmp_path,
        env=env,
        input=b"Correct-Horse\xff-Battery-9\n",
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        preexec_fn=children.with_parent(),
    )
    assert_one_line_error(
        subprocess.CompletedProcess(
            typed.args, typed.returncode, typed.stdout.decode(), typed.stderr.decode()
        ),
        "password on stdin is not valid UTF-8",
        status=1,
    )
    assert listed(tmp_path, env) == []  # nothing half made
