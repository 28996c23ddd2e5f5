"""Login hardening that needs real costs or real services: timing parity, shared throttling."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from fastapi import FastAPI

from cmschat.accounts import auth
from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.settings import AuthSettings, Settings
from tests import support
from tests.support import PASSWORD, NamedUser

LOGIN = "/api/v1/auth/login"


@pytest.mark.slow
async def test_unknown_and_known_usernames_take_similar_time(
    settings: Settings, clock: FakeClock
) -> None:
    real_cost = settings.model_copy(update={"auth": AuthSettings(bcrypt_rounds=12)})
    app = create_app(real_cost, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            context = app.state.context
            from cmschat.accounts import service
            from cmschat.accounts.models import Role

            async with context.db.unit_of_work("system:test") as session:
                await service.create_user(
                    session,
                    username="alice",
                    password=PASSWORD,
                    role=Role.member,
                    display_name=None,
                    must_change_password=False,
                    bcrypt_rounds=12,
                    clock=clock,
                )

            async def timed(username: str) -> float:
                # The CPU the process spent answering (bcrypt runs in a worker thread, which
                # process time includes): the work an attacker times, without the noise of
                # other processes on a busy machine, which made wall-clock ratios flaky.
                started = time.process_time()
                response = await client.post(
                    LOGIN, json={"username": username, "password": "wrong-password-1"}
                )
                assert response.status_code == 401
                return time.process_time() - started

            # The very first request after start-up: no warm-up may hide a one-shot oracle.
            first = await timed("nobody")
            known: list[float] = []
            unknown: list[float] = []
            for n in range(3):  # interleaved, so any drift touches both alike
                known.append(await timed("alice"))
                unknown.append(await timed(f"nobody{n}"))
    assert first / statistics.median(known) < 1.5, (first, known)
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.6 < ratio < 1.6, (known, unknown)
    assert min(known + unknown) > 0.05  # bcrypt at cost 12 really ran both times


async def test_the_dummy_hash_is_made_at_start_up_not_by_the_first_unknown_name(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    real = auth.hash_password

    async def counting(password: str, *, rounds: int) -> str:
        made.append(rounds)
        return await real(password, rounds=rounds)

    monkeypatch.setattr(auth, "hash_password", counting)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        assert made == [settings.auth.bcrypt_rounds]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                LOGIN, json={"username": "nobody", "password": "wrong-password-1"}
            )
    assert response.status_code == 401
    assert made == [settings.auth.bcrypt_rounds]  # the request hashed nothing


async def test_throttling_is_shared_by_instances_through_redis(
    settings: Settings, clock: FakeClock, redis_prefix: str, alice: NamedUser
) -> None:
    shared = settings.model_copy(
        update={"redis_url": support.REDIS_URL, "redis_prefix": redis_prefix}
    )
    first, second = create_app(shared, clock=clock), create_app(shared, clock=clock)

    async def post(app: FastAPI, password: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(LOGIN, json={"username": "alice", "password": password})

    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        ready = await post_ready(second)
        assert ready == {
            "database": "ok",
            "redis": "ok",
            "broker": "ok",
            "storage": "ok",
            "disk": "ok",
        }
        limit = shared.auth.max_failures_per_account
        for n in range(limit):
            assert (await post(first if n % 2 else second, "bad-guess-000")).status_code == 401
        assert (await post(first, PASSWORD)).status_code == 429
        assert (await post(second, PASSWORD)).status_code == 429


async def post_ready(app: FastAPI) -> dict[str, str]:
    """The readiness checks of an app."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    checks: dict[str, str] = response.json()["checks"]
    return checks
