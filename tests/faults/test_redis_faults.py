"""Redis killed and restarted, or frozen and thawed, under two instances (MariaDB + Redis).

What users must see: sign-in keeps working; people on the same instance keep chatting while
Redis is away; the first message after Redis returns reaches every member within 2 s (no
stale pooled connection swallowing it); ``/readyz`` follows Redis' real state both ways;
nobody receives a message twice or out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import support
from tests.faults.cluster import cluster_environment, room_of_everyone
from tests.faults.own_redis import OwnRedis, own_redis  # noqa: F401 - fixture
from tests.processes import Server
from tests.realtime.test_multi_instance import http_to, live, login, two_instances
from tests.realtime.wsclient import WsClient, token_of, ws_client

pytestmark = [pytest.mark.slow, pytest.mark.mariadb]
DELIVERY_WITHIN = 2.0
READINESS_WITHIN = 6.0
"""``/readyz`` checks Redis with a 3 s time-out; a stalled Redis shows after that."""


USERS = ("ann", "ben", "cho")


@pytest.fixture
def fault_env(tmp_path: Path, own_redis: OwnRedis) -> Iterator[dict[str, str]]:  # noqa: F811
    """A fresh MariaDB database, the suite's own Redis, three users."""
    support.mariadb_available()
    url = support.run_sync(support.create_mariadb_database())
    try:
        yield cluster_environment(tmp_path, database_url=url, redis_url=own_redis.url, users=USERS)
    finally:
        support.run_sync(support.drop_mariadb_database(url))


class Member:
    """A member's socket and every message frame it received, in order."""

    def __init__(self, ws: WsClient, room: int) -> None:
        self.ws = ws
        self.room = room
        self.contents: list[str] = []
        self.seqs: list[int] = []

    async def wait_for(self, content: str, within: float) -> float:
        """Seconds until the message ``content`` arrived (fails after ``within``)."""
        started = time.monotonic()
        while content not in self.contents:
            remaining = within - (time.monotonic() - started)
            if remaining <= 0:
                pytest.fail(f"{content!r} not delivered within {within} s: {self.contents}")
            try:
                frame = await self.ws.recv(within=remaining)
            except TimeoutError:
                continue
            if frame["type"] == "message.created" and frame["room_id"] == self.room:
                self.contents.append(frame["message"]["content"])
                self.seqs.append(frame["seq"])
        return time.monotonic() - started


async def readiness(server: Server) -> tuple[int, dict[str, Any]]:
    """``/readyz``: status code and checks."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(server.base_url + "/readyz")
    return response.status_code, response.json()["checks"]


async def until_ready_is(servers: list[Server], status: int, within: float) -> float:
    """Seconds until every server's ``/readyz`` answers ``status``."""
    started = time.monotonic()
    while True:
        answers = await asyncio.gather(*(readiness(server) for server in servers))
        if all(code == status for code, _ in answers):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"/readyz not {status} within {within} s: {answers}")
        await asyncio.sleep(0.2)  # polling an HTTP endpoint: there is no event to wait on


async def send(server: Server, headers: dict[str, str], room: int, content: str) -> None:
    """Post a message over HTTP; it must be stored whatever Redis does."""
    async with http_to(server) as http:
        response = await http.post(
            f"/api/v1/rooms/{room}/messages", headers=headers, json={"content": content}
        )
    assert response.status_code == 201, response.text


@contextlib.asynccontextmanager
async def cho_on_one_ben_on_two(
    one: Server, two: Server
) -> AsyncIterator[tuple[dict[str, dict[str, str]], int, Member, Member]]:
    """Cho's socket on instance one, Ben's on two, both past a first message from Ann."""
    heads, room = await room_of_everyone(one, USERS)
    async with (
        ws_client(live(one), token_of(heads["cho"])) as cho_ws,
        ws_client(live(two), token_of(heads["ben"])) as ben_ws,
    ):
        cho, ben = Member(cho_ws, room), Member(ben_ws, room)
        await send(two, heads["ann"], room, "before")
        await asyncio.gather(cho.wait_for("before", 5), ben.wait_for("before", 5))
        yield heads, room, cho, ben


def assert_exactly_once_in_order(member: Member) -> None:
    """No message twice, none out of order."""
    assert len(member.seqs) == len(set(member.seqs)), member.contents
    assert member.seqs == sorted(member.seqs), member.contents


async def test_redis_killed_and_restarted(
    fault_env: dict[str, str],
    own_redis: OwnRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    with two_instances(tmp_path, fault_env) as (one, two):
        async with cho_on_one_ben_on_two(one, two) as (heads, room, cho, ben):
            own_redis.kill()
            await until_ready_is([one, two], 503, READINESS_WITHIN)
            async with http_to(one) as http:  # sign-in does not need Redis
                started = time.monotonic()
                await login(http, "ann")
                assert time.monotonic() - started < 4
            await send(one, heads["ann"], room, "during")
            assert await cho.wait_for("during", 1.0) <= 1.0  # same instance: at once

            own_redis.start()
            await send(two, heads["ann"], room, "first after, via two")
            await send(one, heads["ann"], room, "first after, via one")
            for member in (cho, ben):
                for content in ("during", "first after, via two", "first after, via one"):
                    await member.wait_for(content, DELIVERY_WITHIN)
            await until_ready_is([one, two], 200, READINESS_WITHIN)
    for member in (cho, ben):
        assert_exactly_once_in_order(member)
    for server in (one, two):
        assert "Traceback" not in server.stderr()


async def test_redis_frozen_and_thawed(
    fault_env: dict[str, str],
    own_redis: OwnRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    with two_instances(tmp_path, fault_env) as (one, two):
        async with cho_on_one_ben_on_two(one, two) as (heads, room, cho, ben):
            own_redis.freeze()
            try:
                await until_ready_is([one, two], 503, READINESS_WITHIN)
                async with http_to(one) as http:
                    await login(http, "ann")
                await send(one, heads["ann"], room, "while frozen")
                assert await cho.wait_for("while frozen", 1.0) <= 1.0
            finally:
                own_redis.thaw()
            assert await ben.wait_for("while frozen", DELIVERY_WITHIN) <= DELIVERY_WITHIN
            await send(two, heads["ann"], room, "after")
            await asyncio.gather(
                cho.wait_for("after", DELIVERY_WITHIN), ben.wait_for("after", DELIVERY_WITHIN)
            )
            await until_ready_is([one, two], 200, READINESS_WITHIN)
    for member in (cho, ben):
        assert_exactly_once_in_order(member)
