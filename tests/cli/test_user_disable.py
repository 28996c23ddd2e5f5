"""``cmschat user disable`` / ``enable``: the account's sessions end, its sockets close."""

from __future__ import annotations

from pathlib import Path

import httpx

from cmschat.realtime.connections import CLOSE_SESSION_ENDED
from tests.cli.test_cli import FAST, assert_one_line_error
from tests.processes import clean_env, cmschat, running_server
from tests.realtime.test_multi_instance import live
from tests.realtime.test_revocation import closed_with
from tests.realtime.wsclient import ws_client
from tests.support import PASSWORD

CHECK_SECONDS = 1


async def test_disable_ends_sessions_and_closes_sockets_then_enable_lets_them_back(
    tmp_path: Path,
) -> None:
    # One embedded instance, no Redis: the server learns of the CLI's change through its
    # periodic session check.
    env = clean_env(**FAST, CMSCHAT_REALTIME__SESSION_CHECK_SECONDS=str(CHECK_SECONDS))
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    made = cmschat(tmp_path, "user", "create", "bob", "--password-stdin", env=env, stdin=PASSWORD)
    assert made.returncode == 0, made.stderr
    credentials = {"username": "bob", "password": PASSWORD}
    with running_server(tmp_path, env, "serve") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            login = await http.post("/api/v1/auth/login", json=credentials)
            token = login.json()["access_token"]
            async with ws_client(live(server), token) as ws:
                disabled = cmschat(tmp_path, "user", "disable", "BOB", env=env)
                assert disabled.returncode == 0, disabled.stderr
                assert "disabled 'bob'" in disabled.stdout
                code, reason, _ = await closed_with(ws, within=CHECK_SECONDS + 2)
            assert (code, reason) == (CLOSE_SESSION_ENDED, "disabled")
            me = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 401
            assert (await http.post("/api/v1/auth/login", json=credentials)).status_code == 401
            assert cmschat(tmp_path, "user", "enable", "bob", env=env).returncode == 0
            assert (await http.post("/api/v1/auth/login", json=credentials)).status_code == 200


def test_disable_refusals_are_one_line(tmp_path: Path) -> None:
    env = clean_env(**FAST)
    nowhere = cmschat(tmp_path, "user", "disable", "bob", env=env)
    assert_one_line_error(nowhere, "no cmschat database", status=1)
    assert not (tmp_path / "var").exists()
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    assert_one_line_error(cmschat(tmp_path, "user", "disable", "nobody", env=env), "nobody")
