"""Throttling under parallel guesses, on every check of a password, and its audit cost."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select

from cmschat.accounts import passwords
from cmschat.accounts import service as accounts
from cmschat.accounts.models import LoginAttempt, Role
from cmschat.app import create_app
from cmschat.audit.models import AuditEvent
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.settings import Settings
from tests import support
from tests.support import PASSWORD, error_of

LOGIN = "/api/v1/auth/login"
ATTACKER = ("198.51.100.66", 4000)


@dataclass
class Running:
    """An app started on the test's database, with the counter backend under test."""

    app: FastAPI
    context: AppContext

    def client(self, address: tuple[str, int] = ATTACKER) -> httpx.AsyncClient:
        """An HTTP client seen by the app as coming from ``address``."""
        transport = httpx.ASGITransport(app=self.app, client=address)
        return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.fixture(params=["memory", "redis"])
async def running(
    request: pytest.FixtureRequest, settings: Settings, clock: FakeClock
) -> AsyncIterator[Running]:
    """The app with in-process counts, or with counts in the real Redis (own key prefix)."""
    prefix = f"test-{secrets.token_hex(6)}"
    if request.param == "redis":
        redis = Redis.from_url(support.REDIS_URL)
        try:
            await redis.ping()
        except Exception as exc:
            support.service_missing("Redis", exc)
        finally:
            await redis.aclose()
        settings = settings.model_copy(
            update={"redis_url": support.REDIS_URL, "redis_prefix": prefix}
        )
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        context: AppContext = app.state.context
        async with context.db.unit_of_work(SYSTEM_SETUP) as session:
            await accounts.create_user(
                session,
                username="alice",
                password=PASSWORD,
                role=Role.member,
                display_name=None,
                must_change_password=False,
                bcrypt_rounds=settings.auth.bcrypt_rounds,
                clock=clock,
            )
        yield Running(app=app, context=context)
        if context.redis is not None:
            keys = [key async for key in context.redis.scan_iter(f"{prefix}:*")]
            if keys:
                await context.redis.delete(*keys)


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password verification bcrypt really runs (in worker threads)."""
    calls: list[str] = []
    lock = threading.Lock()
    real: Callable[[str, str], bool] = passwords._verify_sync

    def counting(password: str, stored: str) -> bool:
        with lock:
            calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(passwords, "_verify_sync", counting)
    return calls


async def test_parallel_guesses_never_reach_bcrypt_past_the_limit(
    running: Running, bcrypt_calls: list[str]
) -> None:
    limit = running.context.settings.auth.max_failures_per_account
    async with running.client() as client:
        answers = await asyncio.gather(
            *(
                client.post(LOGIN, json={"username": "alice", "password": f"guess-{n:04}"})
                for n in range(50)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [401] * limit + [429] * (50 - limit)
        assert len(bcrypt_calls) == limit
        late = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert late.status_code == 429
    assert error_of(late)["code"] == "rate_limited"
    assert (
        0 < int(late.headers["Retry-After"]) <= running.context.settings.auth.failure_window_seconds
    )
    assert len(bcrypt_calls) == limit


async def test_a_stolen_token_cannot_guess_the_password(
    running: Running, bcrypt_calls: list[str]
) -> None:
    limit = running.context.settings.auth.max_failures_per_account
    async with running.client(("203.0.113.5", 1)) as client:
        signed_in = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        bcrypt_calls.clear()
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/me/password",
                    headers=headers,
                    json={"current_password": f"guess-{n:04}", "new_password": "Fresh-secret-1234"},
                )
                for n in range(50)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [422] * limit + [429] * (50 - limit)
        assert len(bcrypt_calls) == limit
        late = await client.post(
            "/api/v1/me/password",
            headers=headers,
            json={"current_password": PASSWORD, "new_password": "Fresh-secret-1234"},
        )
    assert late.status_code == 429
    assert int(late.headers["Retry-After"]) > 0
    assert len(bcrypt_calls) == limit


async def _audit_and_attempt_counts(context: AppContext) -> tuple[int, int]:
    async with context.db.unit_of_work("system:test") as session:
        events = await session.scalar(select(func.count()).select_from(AuditEvent))
        attempts = await session.scalar(select(func.count()).select_from(LoginAttempt))
    return events or 0, attempts or 0


async def test_throttled_logins_are_recorded_once_per_window_not_once_each(
    running: Running,
) -> None:
    limit = running.context.settings.auth.max_failures_per_account
    async with running.client() as client:
        for n in range(limit):
            await client.post(LOGIN, json={"username": "alice", "password": f"guess-{n:04}"})
        before = await _audit_and_attempt_counts(running.context)
        answers = await asyncio.gather(
            *(
                client.post(LOGIN, json={"username": "alice", "password": f"more-{n:04}"})
                for n in range(200)
            )
        )
    assert {answer.status_code for answer in answers} == {429}
    events, attempts = await _audit_and_attempt_counts(running.context)
    assert (events - before[0], attempts - before[1]) == (1, 1)
    async with running.context.db.unit_of_work("system:test") as session:
        last = await session.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1))
    assert last is not None and last.action == "auth.login_throttled"
    changes = json.loads(last.changes)
    assert (changes["username"], changes["scope"]) == ("alice", ["account"])
    assert 0 < changes["retry_after"] <= 900


async def test_one_address_guessing_many_names_is_recorded_once_when_throttled(
    running: Running,
) -> None:
    per_address = running.context.settings.auth.max_failures_per_address
    async with running.client() as client:
        for n in range(per_address):
            await client.post(LOGIN, json={"username": f"user{n}", "password": "guess-0000"})
        before = await _audit_and_attempt_counts(running.context)
        for n in range(200):
            answer = await client.post(
                LOGIN, json={"username": f"other{n}", "password": "guess-0000"}
            )
            assert answer.status_code == 429
    events, attempts = await _audit_and_attempt_counts(running.context)
    assert (events - before[0], attempts - before[1]) == (1, 1)


async def test_typed_usernames_are_normalised_and_cut_before_they_are_recorded(
    running: Running,
) -> None:
    typed = " ＭＡＬＬＯＲＹ\u202e\u0007" + "x" * 50
    async with running.client() as client:
        answer = await client.post(LOGIN, json={"username": typed, "password": "guess-0000"})
    assert answer.status_code == 401
    async with running.context.db.unit_of_work("system:test") as session:
        attempt = await session.scalar(select(LoginAttempt))
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "auth.login_failed")
        )
    expected = "mallory" + "x" * 24 + "…"
    assert attempt is not None and attempt.username == expected
    assert event is not None and json.loads(event.changes)["username"] == expected
