"""Issue 16: logins, account creations and sends at once on the embedded SQLite database.

A real ``cmschat serve`` process: 50 logins, 50 user creations and 200 sends fired together
all get an answer, none a 5xx ("database is locked" used to surface as a 500), and every
acknowledged message is stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_cli import change_first_admin_password
from tests.processes import clean_env, cmschat, running_server

# bcrypt 12, the production cost: each hash takes ~0.25 s, so the create/login hashing
# overlaps the sends' write transactions for the whole run. (At 12, the busy-handler code
# answered a dozen of these requests 503; at 8 it passed, so 8 would prove nothing.)
ENV = {
    "CMSCHAT_ENVIRONMENT": "test",
    "CMSCHAT_AUTH__BCRYPT_ROUNDS": "12",
    "CMSCHAT_CHAT__SEND_RATE": "0",
    "CMSCHAT_AUTH__MAX_FAILURES_PER_ADDRESS": "1000",
}
USER_PASSWORD = "Contention-Pass-2026!"
LOGINS = 50
CREATIONS = 50
SENDERS = 10
SENDS_EACH = 20
TIMEOUT = 60.0
SETUP_AT_ONCE = 4


async def _setup(http: httpx.AsyncClient, admin: dict[str, str]) -> tuple[list[str], int]:
    """Users to log in as, and a room they all belong to."""
    names = [f"login{i}" for i in range(LOGINS)]
    # A few at a time: the server hashes on both cores (one at a time took 50 hashes'
    # time in a row), and no more than that, so none of them waits for the write lock long.
    gate = asyncio.Semaphore(SETUP_AT_ONCE)

    async def create(name: str) -> int:
        async with gate:
            created = await http.post(
                "/api/v1/admin/users",
                json={
                    "username": name,
                    "password": USER_PASSWORD,
                    "role": "member",
                    "must_change_password": False,
                },
                headers=admin,
            )
        assert created.status_code == 201, created.text
        user_id: int = created.json()["id"]
        return user_id

    ids = await asyncio.gather(*map(create, names))
    room = await http.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "contention", "member_ids": ids[:SENDERS]},
        headers=admin,
    )
    assert room.status_code == 201, room.text
    return names, room.json()["id"]


async def _login(http: httpx.AsyncClient, name: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"username": name, "password": USER_PASSWORD})


async def _storm(base_url: str, admin_password: str) -> None:
    limits = httpx.Limits(max_connections=400)
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT, limits=limits) as http:
        signed = await http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": admin_password}
        )
        admin = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        names, room_id = await _setup(http, admin)
        signed_in = await asyncio.gather(*(_login(http, name) for name in names[:SENDERS]))
        senders = [{"Authorization": f"Bearer {s.json()['access_token']}"} for s in signed_in]

        requests: list[Any] = [_login(http, name) for name in names]
        requests += [
            http.post(
                "/api/v1/admin/users",
                json={"username": f"new{i}", "password": USER_PASSWORD, "role": "member"},
                headers=admin,
            )
            for i in range(CREATIONS)
        ]
        requests += [
            http.post(
                f"/api/v1/rooms/{room_id}/messages",
                json={"content": f"m{s}-{n}", "client_id": f"c{s}-{n}"},
                headers=auth,
            )
            for s, auth in enumerate(senders)
            for n in range(SENDS_EACH)
        ]
        answers = await asyncio.gather(*requests)

        statuses = [answer.status_code for answer in answers]
        assert len(statuses) == LOGINS + CREATIONS + SENDERS * SENDS_EACH
        assert [s for s in statuses if s >= 500] == [], [
            a.text for a in answers if a.status_code >= 500
        ]
        assert statuses[:LOGINS] == [200] * LOGINS
        assert statuses[LOGINS : LOGINS + CREATIONS] == [201] * CREATIONS
        acked = {a.json()["id"] for a in answers[LOGINS + CREATIONS :] if a.status_code == 201}
        assert len(acked) == SENDERS * SENDS_EACH

        stored: set[int] = set()
        after = 0
        while True:
            page = await http.get(
                f"/api/v1/rooms/{room_id}/messages",
                params={"after": after, "limit": 100},
                headers=admin,
            )
            assert page.status_code == 200, page.text
            items = page.json()["items"]
            if not items:
                break
            stored |= {item["id"] for item in items}
            after = max(item["seq"] for item in items)
        assert acked <= stored


@pytest.mark.slow
def test_logins_creations_and_sends_at_once_on_sqlite(tmp_path: Path) -> None:
    env = clean_env(**ENV)
    assert cmschat(tmp_path, "migrate", env=env).returncode == 0
    with running_server(tmp_path, env, "contention") as server:
        password = change_first_admin_password(server)
        try:
            asyncio.run(_storm(server.base_url, password))
        except httpx.TransportError as error:
            state = server.process.poll()
            alive = "running" if state is None else f"exited with {state}"
            pytest.fail(
                f"a request got no answer ({error!r}); the server is {alive}; "
                f"its log ends:\n{server.stderr()[-4000:]}"
            )
        assert "database is locked" not in server.stderr()
