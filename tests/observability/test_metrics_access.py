"""``/metrics`` protection: the audit head series only for a scrape with the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.settings import MetricsSettings, Settings
from tests.support import NamedUser

TOKEN = "metrics-token-" + "x" * 32
HEAD_SERIES = {"cmschat_audit_head_id", "cmschat_audit_head_hash_prefix"}


def families(text: str) -> set[str]:
    """The family names of an exposition."""
    return {family.name for family in text_string_to_metric_families(text)}


@pytest.fixture
async def guarded(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose /metrics wants the token."""
    guarded_settings = settings.model_copy(
        update={"metrics": MetricsSettings(token=SecretStr(TOKEN))}
    )
    application = create_app(guarded_settings, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_an_open_scrape_lacks_the_audit_head(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    await admin.login(client)  # writes audit events, so a head exists
    response = await client.get("/metrics")
    assert response.status_code == 200
    names = families(response.text)
    assert not names & HEAD_SERIES
    # The rest is there, the process collector's CPU, memory and open files included.
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert "cmschat_http_requests" in names


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
)
async def test_a_guarded_scrape_without_the_right_token_is_refused(
    guarded: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await guarded.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "cmschat_" not in response.text


async def test_the_right_token_shows_the_audit_head(guarded: httpx.AsyncClient) -> None:
    await guarded.post(
        "/api/v1/auth/login", json={"username": "nobody", "password": "wrong-password-1"}
    )
    response = await guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert families(response.text) >= HEAD_SERIES


def test_a_short_token_is_refused_in_production() -> None:
    with pytest.raises(ValueError, match="CMSCHAT_METRICS__TOKEN"):
        Settings(metrics=MetricsSettings(token=SecretStr("short")), _env_file=None)  # type: ignore[call-arg]
