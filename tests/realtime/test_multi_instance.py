"""Two ``cmschat serve`` processes on MariaDB + Redis: fan-out, and losing one mid-stream.

Real processes, real services: every client receives every message of its rooms exactly
once and in ``seq`` order, also when its instance is killed (SIGKILL) and it resumes on
the other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import support
from tests.processes import Server, clean_env, cmschat, running_server
from tests.realtime.wsclient import LiveServer, WsClient, ws_client
from tests.support import PASSWORD

pytestmark = pytest.mark.slow
USERS = ["ann", "ben", "cho", "dan"]


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings for a two-instance cluster on a fresh MariaDB database and the real Redis."""
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
        CMSCHAT_CHAT__SEND_RATE="0",  # each user sends bursts of 25 (tests/api/test_send_rate.py)
    )
    try:
        assert cmschat(tmp_path, "migrate", env=env).returncode == 0
        for name in USERS:
            created = cmschat(
                tmp_path, "user", "create", name, "--password-stdin", env=env, stdin=PASSWORD + "\n"
            )
            assert created.returncode == 0, created.stderr
        yield env
    finally:
        support.run_sync(support.drop_mariadb_database(url))


@contextlib.contextmanager
def two_instances(
    directory: Path, env: dict[str, str], workers: int = 1
) -> Iterator[tuple[Server, Server]]:
    with (
        running_server(directory, env, "one", workers=workers) as one,
        running_server(directory, env, "two", workers=workers) as two,
    ):
        yield one, two


def live(server: Server) -> LiveServer:
    scheme, _, host = server.base_url.partition("://")
    return LiveServer(app=None, host=host, scheme=scheme)  # type: ignore[arg-type]


async def login(http: httpx.AsyncClient, name: str) -> dict[str, str]:
    response = await http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@contextlib.asynccontextmanager
async def http_to(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        yield http


class Collector:
    """One user's view: a WebSocket that follows the room and records message seqs."""

    def __init__(self, token: str, room: int) -> None:
        self.token = token
        self.room = room
        self.seqs: list[int] = []
        self.contents: list[str] = []

    def take(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            if frame["type"] == "message.created" and frame["room_id"] == self.room:
                self.seqs.append(frame["seq"])
                self.contents.append(frame["message"]["content"])

    async def read_until(self, ws: WsClient, last_seq: int) -> None:
        self.take(await ws.recv_until(lambda f: f.get("seq", 0) >= last_seq, within=30))


async def send_all(
    servers: list[Server], tokens: dict[str, str], room: int, per_user: int, tag: str
) -> None:
    """Every user sends ``per_user`` messages, alternating instances, all users at once."""

    async def one_user(index: int, name: str) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(http_to(s)) for s in servers]
            for n in range(per_user):
                http = clients[(index + n) % len(clients)]
                response = await http.post(
                    f"/api/v1/rooms/{room}/messages",
                    headers={"Authorization": f"Bearer {tokens[name]}"},
                    json={"content": f"{tag}-{name}-{n}", "client_id": f"{tag}-{name}-{n}"},
                )
                assert response.status_code == 201, response.text

    await asyncio.gather(*(one_user(i, name) for i, name in enumerate(USERS)))


# workers=2: each instance is a supervisor over two workers sharing its port, so clients
# and senders are spread over four processes; SIGKILL of instance two takes both its
# workers down with it.
@pytest.mark.parametrize("workers", [1, 2])
async def test_every_client_on_either_instance_gets_every_message_once_in_order(
    cluster_env: dict[str, str], tmp_path: Path, workers: int
) -> None:
    with two_instances(tmp_path, cluster_env, workers) as (one, two):
        async with http_to(one) as http:
            tokens = {name: (await login(http, name))["Authorization"].split()[1] for name in USERS}
            ids = {
                u["username"]: u["id"]
                for u in [
                    (await http.get("/api/v1/me", headers={"Authorization": f"Bearer {t}"})).json()
                    for t in tokens.values()
                ]
            }
            created = await http.post(
                "/api/v1/rooms",
                headers={"Authorization": f"Bearer {tokens['ann']}"},
                json={"kind": "group", "name": "cluster", "member_ids": [ids[n] for n in USERS]},
            )
            room = created.json()["id"]
            start = created.json()["last_seq"]
        collectors = {name: Collector(tokens[name], room) for name in USERS}
        placement = {"ann": one, "ben": one, "cho": two, "dan": two}
        async with contextlib.AsyncExitStack() as stack:
            sockets = {
                name: await stack.enter_async_context(
                    ws_client(live(placement[name]), tokens[name])
                )
                for name in USERS
            }
            per_user = 25
            await send_all([one, two], tokens, room, per_user, "burst")
            last = start + per_user * len(USERS)
            await asyncio.gather(*(collectors[n].read_until(sockets[n], last) for n in USERS))
        for collector in collectors.values():
            assert collector.seqs == list(range(start + 1, last + 1))
            assert len(set(collector.contents)) == per_user * len(USERS)

        # Now lose instance two mid-stream: its clients resume on instance one.
        async with contextlib.AsyncExitStack() as stack:
            sockets = {
                name: await stack.enter_async_context(
                    ws_client(live(placement[name]), tokens[name], resume={room: last})
                )
                for name in USERS
            }
            sending = asyncio.create_task(send_all([one], tokens, room, 20, "kill"))
            final = last + 20 * len(USERS)
            # Let part of the stream arrive on instance two's clients, then SIGKILL it.
            for name in ("cho", "dan"):
                collectors[name].take(
                    await sockets[name].recv_until(
                        lambda f: f.get("seq", 0) >= last + 10, within=30
                    )
                )
            two.process.send_signal(signal.SIGKILL)
            for name in ("cho", "dan"):
                with contextlib.suppress(Exception):
                    collectors[name].take(
                        await sockets[name].recv_until(lambda f: False, within=10)
                    )
                resumed = await stack.enter_async_context(
                    ws_client(live(one), tokens[name], resume={room: collectors[name].seqs[-1]})
                )
                sockets[name] = resumed
            await sending
            await asyncio.gather(*(collectors[n].read_until(sockets[n], final) for n in USERS))
        for name, collector in collectors.items():
            assert collector.seqs == list(range(start + 1, final + 1)), name
            assert len(set(collector.contents)) == final - start, name
