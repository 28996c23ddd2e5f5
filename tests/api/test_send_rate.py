"""Per-user send rate: one token bucket for HTTP and WebSocket, shared by instances via Redis."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from cmschat.app import create_app
from cmschat.chat.ratelimit import MemorySendLimiter, RedisSendLimiter
from cmschat.clock import FakeClock
from cmschat.settings import Settings
from tests import support
from tests.processes import free_port
from tests.realtime.wsclient import LiveServer, WsClient, serve, token_of, ws_client
from tests.support import NamedUser, error_of

RATE, BURST = 2.0, 5


def limited(settings: Settings, **changes: Any) -> Settings:
    """The test settings with the send rate on (the suite's default turns it off)."""
    copy = settings.model_copy(deep=True, update=changes)
    copy.chat.send_rate, copy.chat.send_burst = RATE, BURST
    return copy


@contextlib.asynccontextmanager
async def instance(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[LiveServer, Any]]:
    """A live app (for WebSockets) and HTTP to that same app."""
    async with serve(create_app(settings, clock=clock)) as live:
        transport = httpx.ASGITransport(app=live.app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield live, http


async def make_room(http: httpx.AsyncClient, owner: dict[str, str], member: NamedUser) -> int:
    response = await http.post(
        "/api/v1/rooms",
        headers=owner,
        json={"kind": "group", "name": "fast", "member_ids": [member.id]},
    )
    assert response.status_code == 201, response.text
    room_id: int = response.json()["id"]
    return room_id


async def send(
    http: httpx.AsyncClient, headers: dict[str, str], room: int, text: str, client_id: str
) -> httpx.Response:
    return await http.post(
        f"/api/v1/rooms/{room}/messages",
        headers=headers,
        json={"content": text, "client_id": client_id},
    )


async def ws_send(ws: WsClient, room: int, client_id: str) -> dict[str, Any]:
    """Send over the socket; the ack or error answering this client_id."""
    await ws.send(
        {"type": "message.send", "room_id": room, "content": client_id, "client_id": client_id}
    )
    frames = await ws.recv_until(
        lambda f: f["type"] in ("ack", "error") and f.get("client_id") == client_id
    )
    return frames[-1]


async def test_http_burst_passes_then_429_with_retry_after_and_refills(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    async with instance(limited(settings), clock) as (_live, http):
        a, b = await alice.login(http), await bob.login(http)
        room = await make_room(http, a, bob)
        for n in range(BURST):  # a burst within the limit: every one stored
            assert (await send(http, a, room, f"line {n}", f"c{n}")).status_code == 201

        refused = await send(http, a, room, "one too many", "c-extra")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert error_of(refused)["code"] == "rate_limited"
        # A retry of a stored message is not a new message: it is answered, not refused.
        retried = await send(http, a, room, "line 0", "c0")
        assert retried.status_code == 200
        assert retried.json()["content"] == "line 0"
        # The budget is per user.
        assert (await send(http, b, room, "bob is fine", "b0")).status_code == 201

        clock.advance(seconds=1)  # RATE tokens back
        assert (await send(http, a, room, "later", "c-later-1")).status_code == 201
        assert (await send(http, a, room, "later", "c-later-2")).status_code == 201
        assert (await send(http, a, room, "later", "c-later-3")).status_code == 429


async def test_websocket_gets_a_rate_limited_frame_and_stays_open_and_shares_the_budget(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    async with instance(limited(settings), clock) as (live, http):
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        async with ws_client(live, token_of(a)) as ws:
            for n in range(BURST - 1):
                assert (await ws_send(ws, room, f"w{n}"))["type"] == "ack"
            assert (await send(http, a, room, "over http", "h0")).status_code == 201

            refused = await ws_send(ws, room, "w-extra")
            assert refused["type"] == "error"
            assert refused["code"] == "rate_limited"
            assert refused["retry_after"] == 1
            assert refused["client_id"] == "w-extra"
            await ws.ping()  # still open
            assert (await send(http, a, room, "over http", "h1")).status_code == 429

            clock.advance(seconds=1)
            assert (await ws_send(ws, room, "w-extra"))["type"] == "ack"


async def test_two_instances_share_each_users_budget_through_redis(
    settings: Settings, clock: FakeClock, redis_prefix: str, alice: NamedUser, bob: NamedUser
) -> None:
    shared = limited(settings, redis_url=support.REDIS_URL, redis_prefix=redis_prefix)
    async with (
        instance(shared, clock) as (_one, http_one),
        instance(shared, clock) as (two, http_two),
    ):
        assert isinstance(two.app.state.context.send_limiter, RedisSendLimiter)
        a = await alice.login(http_one)
        room = await make_room(http_one, a, bob)
        for n in range(BURST - 1):  # the burst, split over both instances
            http = http_one if n % 2 else http_two
            assert (await send(http, a, room, f"r{n}", f"r{n}")).status_code == 201
        async with ws_client(two, token_of(a)) as ws:
            assert (await ws_send(ws, room, "ws-last"))["type"] == "ack"
            assert (await ws_send(ws, room, "ws-over"))["code"] == "rate_limited"
        refused = await send(http_one, a, room, "over", "r-over")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"

        clock.advance(seconds=1)
        assert (await send(http_one, a, room, "again", "r-again")).status_code == 201
        redis = two.app.state.context.redis
        assert await redis.exists(f"{redis_prefix}:sendrate:{alice.id}")


async def test_a_rate_of_zero_turns_the_limit_off(
    settings: Settings, clock: FakeClock, alice: NamedUser, bob: NamedUser
) -> None:
    off = limited(settings)
    off.chat.send_rate = 0
    async with instance(off, clock) as (live, http):
        assert live.app.state.context.send_limiter is None
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        for n in range(BURST * 3):
            assert (await send(http, a, room, f"n{n}", f"n{n}")).status_code == 201


async def test_memory_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = MemorySendLimiter(clock, rate=4, burst=2)
    assert [await bucket.take(1) for _ in range(3)] == [0, 0, 0.25]
    clock.advance(seconds=10)  # long idle: back to the burst, not more
    assert [await bucket.take(1) for _ in range(3)] == [0, 0, 0.25]


async def test_an_unreachable_redis_limits_in_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without Redis the rate is counted here: sending works, a flood is still held back."""
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    limiter = RedisSendLimiter(redis, FakeClock(), rate=1, burst=1, prefix="nowhere:")
    try:
        waits = [await limiter.take(1) for _ in range(3)]
    finally:
        await redis.aclose()
    assert waits[0] == 0
    assert all(wait > 0 for wait in waits[1:])
    assert "Redis unreachable" in caplog.text
