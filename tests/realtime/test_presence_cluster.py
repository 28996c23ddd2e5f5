"""Presence across two ``cmschat serve`` processes on MariaDB + Redis (issue 18 point 3).

A user connected to both instances stays online for their contacts until their last
connection anywhere closes; the dashboard counts users online on either instance; and
when the instance holding a user's only connection is killed (SIGKILL: nothing said on
the way out), the other instance announces them offline within the presence TTL plus a
third of it.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.faults.cluster import cluster_environment
from tests.processes import Server, cmschat
from tests.realtime.test_multi_instance import http_to, live, login, two_instances
from tests.realtime.wsclient import ws_client
from tests.support import PASSWORD

pytestmark = pytest.mark.slow
TTL = 2.0
USERS = ["ann", "ben", "cho"]


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two instances' settings (a short presence TTL), an admin and three users."""
    support.mariadb_available()
    url = support.run_sync(support.create_mariadb_database())
    prefix = f"test-{secrets.token_hex(4)}"
    try:
        env = cluster_environment(
            tmp_path,
            database_url=url,
            redis_url=support.REDIS_URL,
            users=tuple(USERS),
            CMSCHAT_REDIS_PREFIX=prefix,
            CMSCHAT_REALTIME__PRESENCE_TTL_SECONDS=str(TTL),
        )
        boss = ("user", "create", "boss", "--role", "admin", "--password-stdin")
        created = cmschat(tmp_path, *boss, env=env, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        yield env
    finally:
        support.run_sync(support.drop_mariadb_database(url))
        support.run_sync(support.drop_redis_keys(prefix))


def presence_of(user_id: int, status: str) -> Any:
    return lambda frame: frame == {"type": "presence", "user_id": user_id, "status": status}


async def dashboard(server: Server, boss: dict[str, str]) -> tuple[int, int]:
    """(online on any instance, online on this one) as ``server``'s dashboard says."""
    async with http_to(server) as http:
        board = (await http.get("/api/v1/admin/dashboard", headers=boss)).json()
    return board["online"], board["online_here"]


async def test_a_user_on_two_instances_is_offline_only_when_the_last_connection_goes(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    with two_instances(tmp_path, cluster_env) as (one, two):
        async with http_to(one) as http:
            tokens = {n: (await login(http, n))["Authorization"].split()[1] for n in USERS}
            boss = await login(http, "boss")
            ids = {
                name: (
                    await http.get("/api/v1/me", headers={"Authorization": f"Bearer {t}"})
                ).json()["id"]
                for name, t in tokens.items()
            }
            created = await http.post(
                "/api/v1/rooms",
                headers={"Authorization": f"Bearer {tokens['ann']}"},
                json={"kind": "group", "name": "here", "member_ids": [ids["ben"], ids["cho"]]},
            )
            assert created.status_code == 201, created.text
        ann = ids["ann"]

        async with ws_client(live(two), tokens["ben"]) as ben:
            assert ben.ready["online"] == []
            async with ws_client(live(one), tokens["ann"]) as ann_on_one:
                await ben.recv_until(presence_of(ann, "online"))
                async with ws_client(live(two), tokens["ann"]) as ann_on_two:
                    # A fresh connection of ben's sees ann online (on both instances).
                    async with ws_client(live(one), tokens["ben"]) as ben_again:
                        assert ben_again.ready["online"] == [ann]
                    await wait_until(lambda: dashboard(one, boss), (2, 1))  # ann, ben; here: ann
                    await wait_until(lambda: dashboard(two, boss), (2, 2))
                    await ann_on_one.connection.close()
                    await wait_until(lambda: dashboard(one, boss), (2, 0))
                    # cho's arrival on instance one comes after ann's leaving it: ben hears
                    # cho online, and no "ann offline" before it.
                    async with ws_client(live(one), tokens["cho"]):
                        frames = await ben.recv_until(presence_of(ids["cho"], "online"))
                    assert not [f for f in frames if presence_of(ann, "offline")(f)], frames
                    await ann_on_two.connection.close()
                    await ben.recv_until(presence_of(ann, "offline"))
                    await wait_until(lambda: dashboard(one, boss), (1, 0))

            # Kill the instance holding ann's only connection: instance two says she left.
            async with ws_client(live(one), tokens["ann"]):
                await ben.recv_until(presence_of(ann, "online"))
                await wait_until(lambda: dashboard(two, boss), (2, 1))
                one.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await ben.recv_until(presence_of(ann, "offline"), within=TTL * 4 / 3 + 10)
                took = time.monotonic() - killed
        print(f"\nann announced offline {took:.2f} s after her instance was killed (TTL {TTL} s)")
        assert took <= TTL * 4 / 3 + 5, took
        await wait_until(lambda: dashboard(two, boss), (0, 0))


async def wait_until(read: Any, expected: Any, within: float = 10.0) -> None:
    """Re-read until ``read()`` gives ``expected`` (a state reached by another process)."""
    deadline = time.monotonic() + within
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value}, not {expected}"
        await asyncio.sleep(0.05)
