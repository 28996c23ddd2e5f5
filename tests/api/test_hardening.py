"""HTTP hardening: HSTS only over HTTPS, the server's own request ids, a literal search."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.settings import Settings
from tests.support import NamedUser, audit_events, error_of

SERVER_ID = re.compile(r"[0-9a-f]{32}")
PROXY = "203.0.113.7"


@asynccontextmanager
async def client_of(
    settings: Settings, clock: FakeClock, *, address: str = PROXY, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to an app with some settings changed, from ``address``."""
    app = create_app(settings.model_copy(update=changes), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def hsts(http: httpx.AsyncClient, **headers: str) -> str | None:
    response = await http.get("/healthz", headers=headers)
    assert response.status_code == 200
    return response.headers.get("Strict-Transport-Security")


async def test_hsts_only_when_a_trusted_proxy_says_https(
    settings: Settings, clock: FakeClock
) -> None:
    https = {"X-Forwarded-Proto": "https"}
    async with client_of(settings, clock, trusted_proxies=[PROXY]) as behind_proxy:
        assert await hsts(behind_proxy, **https) == "max-age=31536000; includeSubDomains"
        assert await hsts(behind_proxy) is None  # plain http through the proxy
    async with client_of(settings, clock, trusted_proxies=["192.0.2.1"]) as untrusted:
        assert await hsts(untrusted, **https) is None  # anyone can send the header
    async with client_of(settings, clock) as no_proxy:
        assert await hsts(no_proxy, **https) is None
    async with client_of(
        settings, clock, trusted_proxies=[PROXY], hsts_include_subdomains=False
    ) as host_only:
        assert await hsts(host_only, **https) == "max-age=31536000"
    async with client_of(settings, clock, trusted_proxies=[PROXY], hsts_max_age=0) as off:
        assert await hsts(off, **https) is None


async def test_hsts_when_the_server_itself_speaks_https(
    settings: Settings, clock: FakeClock
) -> None:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://chat.example") as http:
            assert await hsts(http) == "max-age=31536000; includeSubDomains"


async def test_a_client_request_id_is_kept_beside_the_servers_never_instead(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: NamedUser,
    alice: NamedUser,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    headers = await admin.login(client)
    all_logs.clear()
    # A forger reuses an id seen elsewhere, hoping to blur the trail.
    forged = {**headers, "X-Request-ID": "req-role-change-1"}
    response = await client.patch(
        f"/api/v1/admin/users/{alice.id}", json={"role": "agent"}, headers=forged
    )
    assert response.status_code == 200
    ours = response.headers["X-Request-ID"]
    assert SERVER_ID.fullmatch(ours)

    [event] = await audit_events(context.db, action="user.role_changed")
    assert event.request_id == ours
    assert json.loads(event.changes) == {
        "role": ["member", "agent"],
        "client_request_id": "req-role-change-1",
    }
    records = [r for r in all_logs.records if r.name.startswith("cmschat")]
    assert records
    assert all(getattr(r, "http.request.id", None) == ours for r in records)
    assert all(getattr(r, "labels.client_request_id", None) == "req-role-change-1" for r in records)


@pytest.mark.parametrize(
    "given",
    ["x" * 65, "-2-3", "=cmd|' /C calc'!A0", "bad id\nwith newline", "ünïcode"],
)
async def test_long_or_unsafe_client_request_ids_are_dropped(
    client: httpx.AsyncClient, context: AppContext, admin: NamedUser, given: str
) -> None:
    headers = await admin.login(client)
    response = await client.post(
        "/api/v1/admin/users",
        json={"username": "newbie", "password": "Long-enough-pass-1", "role": "member"},
        headers={**headers, "X-Request-ID": given.encode()},
    )
    assert response.status_code == 201, response.text
    [event] = await audit_events(
        context.db, action="user.created", target_id=str(response.json()["id"])
    )
    assert SERVER_ID.fullmatch(event.request_id or "")
    assert "client_request_id" not in json.loads(event.changes)


async def test_search_refuses_control_characters_instead_of_matching_everything(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    headers = await alice.login(client)
    room = await client.post(
        "/api/v1/rooms",
        headers=headers,
        json={"kind": "group", "name": "search", "member_ids": [bob.id]},
    )
    room_id = room.json()["id"]
    for text in ("first note", "second note"):
        sent = await client.post(
            f"/api/v1/rooms/{room_id}/messages", headers=headers, json={"content": text}
        )
        assert sent.status_code == 201
    for query in ("\x00", "note\x00", "a\x01b", "x\x7f", "a\x85b"):
        response = await client.get("/api/v1/search", params={"q": query}, headers=headers)
        assert response.status_code == 422, (query, response.text)
        error = error_of(response)
        assert error["field"] == "q"
        assert "control characters" in error["message"]
    found = await client.get("/api/v1/search", params={"q": "second"}, headers=headers)
    assert [m["content"] for m in found.json()["items"]] == ["second note"]
