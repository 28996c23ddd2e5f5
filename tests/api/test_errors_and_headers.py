"""Uniform errors, security headers, request ids, CORS and health endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.observability import health
from cmschat.settings import Settings
from tests.support import NamedUser, error_of

CSP = "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "


async def test_unknown_route_and_wrong_method_are_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/no/such/route")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    wrong = await client.delete("/api/v1/auth/login")
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b"null",
        b'{"username": 5, "password": []}',
        '{"username": "\udcff"}'.encode("utf-8", "surrogatepass"),
    ],
)
async def test_malformed_bodies_are_422_not_500(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert "message" in error_of(response)


async def test_validation_error_names_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", json={"username": "alice"})
    assert response.status_code == 422
    assert error_of(response)["field"] == "password"
    assert "password" in error_of(response)["message"]


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/openapi.json", "/api/v1/nope", "/api/v1/me"])
async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.headers["Content-Security-Policy"].startswith(CSP)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    if path.startswith("/api/"):
        assert response.headers["Cache-Control"] == "no-store"


async def test_request_id_is_made_by_the_server_and_in_every_log_line(
    client: httpx.AsyncClient, alice: NamedUser, all_logs
) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-abc-123"})
    assert len(given.headers["X-Request-ID"]) == 32  # ours; the caller's goes beside it
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert made.headers["X-Request-ID"] != "bad id\nwith newline"
    assert len(made.headers["X-Request-ID"]) == 32
    all_logs.clear()
    response = await client.post(
        "/api/v1/auth/login",
        headers={"X-Request-ID": "login-req-1"},
        json={"username": "alice", "password": "wrong-password"},
    )
    assert response.status_code == 401
    request_id = response.headers["X-Request-ID"]
    ours = [r for r in all_logs.records if r.name.startswith("cmschat")]
    assert len(ours) >= 2  # the refusal and the access line
    assert all(getattr(r, "http.request.id", None) == request_id for r in ours)
    assert all(getattr(r, "labels.client_request_id", None) == "login-req-1" for r in ours)


async def test_unexpected_errors_are_a_json_500_with_the_request_id_and_a_logged_trace(
    settings: Settings, clock: FakeClock, all_logs, tmp_path: Path
) -> None:
    # API only: the web client's catch-all mount would shadow a route added afterwards.
    app = create_app(settings.model_copy(update={"web_dir": tmp_path / "none"}), clock=clock)

    @app.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/api/v1/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    assert error_of(response) == {
        "code": "internal_error",
        "request_id": request_id,
        "message": error_of(response)["message"],
    }
    assert "kaboom" not in response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    traced = [r for r in all_logs.records if r.exc_info]
    assert traced and getattr(traced[0], "http.request.id") == request_id
    assert getattr(traced[0], "labels.client_request_id") == "req-500"


async def test_cors_answers_only_configured_origins(settings: Settings, clock: FakeClock) -> None:
    configured = settings.model_copy(update={"cors_origins": ["https://chat.example.com"]})
    app = create_app(configured, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            preflight = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            }
            allowed = await client.options(
                "/api/v1/auth/login", headers=preflight | {"Origin": "https://chat.example.com"}
            )
            refused = await client.options(
                "/api/v1/auth/login", headers=preflight | {"Origin": "https://evil.example.net"}
            )
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_no_cors_headers_without_configured_origins(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Origin": "https://chat.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_health_and_readiness(client: httpx.AsyncClient, context: AppContext) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    context.draining = True
    draining = await client.get("/readyz")
    assert draining.status_code == 503
    assert draining.json()["checks"]["lifecycle"] == "draining"


async def test_readiness_fails_when_the_database_is_gone(
    settings: Settings,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "readiness_log", health.ReadinessLog())  # the process's own
    broken = settings.model_copy(update={"database_url": "mysql+asyncmy://nobody@127.0.0.1:1/none"})
    app = create_app(broken, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            probes = [await client.get("/readyz") for _ in range(5)]
            alive = await client.get("/healthz")
    assert {response.status_code for response in probes} == {503}
    assert probes[-1].json()["checks"]["database"] == "unreachable"
    assert alive.status_code == 200
    # A load balancer probing every few seconds gets its answer each time, but the log
    # says once that the database is down, not once per probe.
    said = [r.getMessage() for r in caplog.records if r.name == "cmschat.observability.health"]
    assert len([line for line in said if "database unreachable" in line]) == 1


async def test_openapi_lists_error_responses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    login = spec["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert {"200", "401", "422", "429"} <= set(login)
    assert json.dumps(spec).count("ErrorBody") > 3
