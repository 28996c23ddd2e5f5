"""Setting up two instances for a fault test: settings, users, one room of everyone."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from tests.processes import Server, clean_env, cmschat
from tests.realtime.test_multi_instance import login
from tests.support import PASSWORD


def cluster_environment(
    directory: Path,
    *,
    database_url: str,
    redis_url: str,
    users: tuple[str, ...],
    prefix: tuple[str, ...] = (),
    **extra: str,
) -> dict[str, str]:
    """Settings for instances on ``database_url`` and ``redis_url``, migrated, with ``users``
    (the commands run under ``prefix``: on a test host, ``tests/faults/hosts.py``)."""
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATABASE_URL=database_url,
        CMSCHAT_REDIS_URL=redis_url,
        CMSCHAT_SECRET_KEY=secrets.token_urlsafe(48),
        CMSCHAT_LOG_LEVEL="WARNING",
        CMSCHAT_CHAT__SEND_RATE="0",
        **extra,
    )
    migrated = cmschat(directory, "migrate", env=env, prefix=prefix)
    assert migrated.returncode == 0, migrated.stderr
    for user in users:
        made = cmschat(
            directory,
            *("user", "create", user, "--password-stdin"),
            env=env,
            stdin=PASSWORD + "\n",
            prefix=prefix,
        )
        assert made.returncode == 0, made.stderr
    return env


async def room_of_everyone(
    server: Server, users: tuple[str, ...]
) -> tuple[dict[str, dict[str, str]], int]:
    """Everyone signed in, and one group room of all, made by the first user."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        heads = {user: await login(http, user) for user in users}
        ids = [(await http.get("/api/v1/me", headers=heads[u])).json()["id"] for u in users[1:]]
        made = await http.post(
            "/api/v1/rooms",
            headers=heads[users[0]],
            json={"kind": "group", "name": "faults", "member_ids": ids},
        )
        assert made.status_code == 201, made.text
        return heads, made.json()["id"]
