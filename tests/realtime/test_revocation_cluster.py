"""Revocation across instances: two ``cmschat serve`` processes on MariaDB + Redis.

The user's sockets are on both instances; the revocation is made on instance one (HTTP, or
the ``cmschat user disable`` command). Every socket closes within 2 s with the documented
code, receives nothing sent after the revocation, and a send racing it is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from cmschat.realtime.connections import CLOSE_RECONNECT, CLOSE_SESSION_ENDED
from tests import support
from tests.processes import Server, clean_env, cmschat
from tests.realtime.test_multi_instance import http_to, live, login, two_instances
from tests.realtime.test_revocation import closed_with
from tests.realtime.wsclient import WsClient, ws_client
from tests.support import PASSWORD

pytestmark = pytest.mark.slow
WITHIN = 2.0
EXPECTED = {
    "logout": (CLOSE_SESSION_ENDED, "signed_out"),
    "password": (CLOSE_SESSION_ENDED, "password_changed"),
    "reset": (CLOSE_SESSION_ENDED, "password_reset"),
    "disable": (CLOSE_SESSION_ENDED, "disabled"),
    "role": (CLOSE_RECONNECT, "role_changed"),
    "cli-disable": (CLOSE_SESSION_ENDED, "disabled"),
}


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh MariaDB database, the real Redis on a private channel, and an admin."""
    support.mariadb_available()
    url = support.run_sync(support.create_mariadb_database())
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATABASE_URL=url,
        CMSCHAT_REDIS_URL=support.REDIS_URL,
        CMSCHAT_SECRET_KEY=secrets.token_urlsafe(48),
        CMSCHAT_LOG_LEVEL="WARNING",
        CMSCHAT_REDIS_PREFIX=f"test-{secrets.token_hex(4)}",
    )
    try:
        assert cmschat(tmp_path, "migrate", env=env).returncode == 0
        created = cmschat(
            tmp_path,
            *("user", "create", "boss", "--role", "admin", "--password-stdin"),
            env=env,
            stdin=PASSWORD + "\n",
        )
        assert created.returncode == 0, created.stderr
        yield env
    finally:
        support.run_sync(support.drop_mariadb_database(url))


async def revoke(
    kind: str, http: httpx.AsyncClient, boss: dict[str, str], user: dict[str, Any], **ctx: Any
) -> None:
    """Make the revocation of ``kind`` on instance one."""
    if kind == "logout":
        response = await http.post("/api/v1/auth/logout", headers=ctx["socket_token"])
    elif kind == "password":
        response = await http.post(
            "/api/v1/me/password",
            headers=ctx["other_token"],
            json={"current_password": PASSWORD, "new_password": "Another-Horse-8-staple"},
        )
    elif kind == "reset":
        response = await http.post(
            f"/api/v1/admin/users/{user['id']}/password", headers=boss, json={}
        )
    elif kind in ("disable", "role"):
        body = {"is_active": False} if kind == "disable" else {"role": "agent"}
        response = await http.patch(f"/api/v1/admin/users/{user['id']}", headers=boss, json=body)
    else:
        result = await asyncio.to_thread(
            cmschat, ctx["directory"], "user", "disable", user["username"], env=ctx["env"]
        )
        assert result.returncode == 0, result.stderr
        return
    assert response.status_code in (200, 204), response.text


async def race_a_send(ws: WsClient, room: int, content: str) -> None:
    """Send as the revocation lands; the server must not store it."""
    with contextlib.suppress(ConnectionClosed):
        await ws.send({"type": "message.send", "room_id": room, "content": content})


async def test_revocation_on_one_instance_closes_the_users_sockets_on_both(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    with two_instances(tmp_path, cluster_env) as (one, two):
        async with http_to(one) as http:
            boss = await login(http, "boss")
            for kind, expected in EXPECTED.items():
                timings[kind] = await one_revocation(
                    kind, expected, http, boss, one, two, tmp_path, cluster_env
                )
    assert max(timings.values()) <= WITHIN, timings


async def one_revocation(
    kind: str,
    expected: tuple[int, str],
    http: httpx.AsyncClient,
    boss: dict[str, str],
    one: Server,
    two: Server,
    directory: Path,
    env: dict[str, str],
) -> float:
    name = f"rv-{kind}"
    made = await http.post(
        "/api/v1/admin/users", headers=boss, json={"username": name, "password": PASSWORD}
    )
    assert made.status_code == 201, made.text
    user = made.json()
    socket_token, other_token = await login(http, name), await login(http, name)
    room_made = await http.post(
        "/api/v1/rooms",
        headers=boss,
        json={"kind": "group", "name": kind, "member_ids": [user["id"]]},
    )
    room = room_made.json()["id"]
    token = socket_token["Authorization"].split()[1]
    async with ws_client(live(two), token) as on_two, ws_client(live(one), token) as on_one:
        await revoke(
            kind,
            http,
            boss,
            user,
            socket_token=socket_token,
            other_token=other_token,
            directory=directory,
            env=env,
        )
        revoked_at = time.monotonic()
        await race_a_send(on_two, room, f"late-{kind}")
        sent = await http.post(
            f"/api/v1/rooms/{room}/messages", headers=boss, json={"content": f"after-{kind}"}
        )
        assert sent.status_code == 201, sent.text
        results = await asyncio.gather(closed_with(on_two, 5), closed_with(on_one, 5))
        elapsed = time.monotonic() - revoked_at
    for code, reason, frames in results:
        assert (code, reason) == expected, kind
        assert [f["type"] for f in frames if f["type"] != "presence"] == [], (kind, frames)
    history = await http.get(f"/api/v1/rooms/{room}/messages", headers=boss)
    assert [m["content"] for m in history.json()["items"]] == [f"after-{kind}"], kind
    if kind == "role":  # reconnect: the same token still works, with the new role
        async with ws_client(live(two), token) as again:
            assert again.ready["user"]["role"] == "agent"
    return elapsed
