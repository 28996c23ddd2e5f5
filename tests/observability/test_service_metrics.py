"""Service metrics: requests by route template, errors, queries, logins, uploads, audit."""

from __future__ import annotations

import secrets

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from cmschat.observability import asgi_metrics
from cmschat.observability import instruments as m
from cmschat.observability.asgi_metrics import MetricsMiddleware
from tests.observability.metrics_support import series, value
from tests.support import NamedUser

ROOM_ROUTE = "/api/v1/rooms/{room_id}"


async def make_room(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """A room of the signed-in user."""
    response = await client.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "metrics-" + secrets.token_hex(3), "member_ids": []},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    room_id: int = response.json()["id"]
    return room_id


async def test_requests_are_counted_by_route_template_not_path(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)
    room = await make_room(client, headers)
    labels = {"method": "GET", "route": ROOM_ROUTE, "status": "200"}
    before = value("cmschat_http_requests_total", **labels)
    before_count = value(
        "cmschat_http_request_duration_seconds_count", method="GET", route=ROOM_ROUTE
    )
    for _ in range(3):
        assert (await client.get(f"/api/v1/rooms/{room}", headers=headers)).status_code == 200
    assert value("cmschat_http_requests_total", **labels) == before + 3
    after_count = value(
        "cmschat_http_request_duration_seconds_count", method="GET", route=ROOM_ROUTE
    )
    assert after_count == before_count + 3
    assert value("cmschat_http_requests_in_flight") == 0
    # Statements were timed by operation on the way.
    assert value("cmschat_db_query_duration_seconds_count", operation="SELECT") > 0


async def test_ids_and_unknown_paths_do_not_grow_the_series(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)

    async def round_of(tag: str, count: int) -> None:
        for n in range(count):
            ident = f"{tag}{n}{secrets.token_hex(4)}"
            await client.get(f"/api/v1/rooms/{secrets.randbelow(10**9) + 10**6}", headers=headers)
            await client.get(f"/api/v1/rooms/{ident}", headers=headers)
            await client.get(f"/api/v1/nothing-here/{ident}")
            await client.get(f"/{ident}.html")
            await client.post(f"/api/v1/messages/{n + 10**6}/reactions", headers=headers)
            await client.request("PROPFIND", f"/x/{ident}")

    await round_of("warm", 3)
    known = series()
    await round_of("more", 60)
    assert series() == known
    routes = {dict(labels).get("route") for _, labels in known} - {None}
    assert not any(secrets_like in route for route in routes for secrets_like in ("warm", "more"))


async def test_an_unhandled_error_is_counted_logged_once_and_answered_generically(
    app: FastAPI, client: httpx.AsyncClient, all_logs: pytest.LogCaptureFixture
) -> None:
    async def boom(_request: Request) -> Response:
        raise RuntimeError("a bug with internal detail")

    app.router.routes.insert(0, Route("/test-boom", boom))
    before = value("cmschat_http_unhandled_errors_total")
    response = await client.get("/test-boom")
    assert response.status_code == 500
    assert "internal detail" not in response.text
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert value("cmschat_http_unhandled_errors_total") == before + 1
    [logged] = [r for r in all_logs.records if r.exc_info]
    assert getattr(logged, "http.request.id") == response.headers["x-request-id"]
    assert getattr(logged, "http.route") == "/test-boom"
    assert value("cmschat_http_requests_total", method="GET", route="/test-boom", status="500")


async def test_login_failures_and_throttles_are_counted(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    failures = value("cmschat_login_failures_total")
    throttled = value("cmschat_login_throttled_total")
    statuses = [
        (
            await client.post(
                "/api/v1/auth/login", json={"username": "alice", "password": "not-her-password"}
            )
        ).status_code
        for _ in range(7)
    ]
    assert statuses.count(401) >= 1 and statuses.count(429) >= 1, statuses
    assert value("cmschat_login_failures_total") == failures + statuses.count(401)
    assert value("cmschat_login_throttled_total") == throttled + statuses.count(429)


async def test_uploads_are_counted_by_result_and_refusal_reason(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)
    room = await make_room(client, headers)
    url = f"/api/v1/rooms/{room}/attachments"
    stored = value("cmschat_uploads_total", result="stored", reason="")
    refused = value("cmschat_uploads_total", result="refused", reason="unsupported_type")
    ok = await client.post(url, files={"file": ("notes.txt", b"hello")}, headers=headers)
    assert ok.status_code == 201, ok.text
    bad = await client.post(url, files={"file": ("tool.exe", b"MZ\x90\x00")}, headers=headers)
    assert bad.status_code == 415, bad.text
    assert value("cmschat_uploads_total", result="stored", reason="") == stored + 1
    assert (
        value("cmschat_uploads_total", result="refused", reason="unsupported_type") == refused + 1
    )


async def test_audit_verification_results_are_counted(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    before = value("cmschat_audit_verifications_total", result="intact")
    assert (await client.get("/api/v1/admin/audit/verify", headers=headers)).json()["ok"]
    assert value("cmschat_audit_verifications_total", result="intact") == before + 1


async def test_websocket_closes_are_counted_by_reason() -> None:
    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "{}"})
        await send({"type": "websocket.close", "code": 1013})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(_message: Message) -> None:
        return None

    slow = value("cmschat_websocket_closes_total", reason="slow_client")
    frames = value("cmschat_websocket_frames_sent_total")
    await MetricsMiddleware(gateway)({"type": "websocket", "path": "/ws"}, receive, send)
    assert value("cmschat_websocket_closes_total", reason="slow_client") == slow + 1
    assert value("cmschat_websocket_frames_sent_total") == frames + 1


def test_metric_names_follow_prometheus_conventions() -> None:
    from prometheus_client import Counter, Gauge, Histogram

    from cmschat.observability import instruments

    metrics = [v for v in vars(instruments).values() if isinstance(v, Counter | Gauge | Histogram)]
    assert len(metrics) >= 20
    for metric in metrics:
        name = metric._name
        assert name.startswith("cmschat_"), name
        if isinstance(metric, Histogram) or "timestamp" in name:
            assert name.endswith("_seconds"), name
        # Labels never name users, rooms or raw paths.
        assert not set(metric._labelnames) & {"user", "user_id", "room", "room_id", "path"}


async def test_a_request_counts_on_the_metrics_own_series_also_when_none_are_kept(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = value("cmschat_http_requests_total", method="GET", route="/healthz", status="200")
    await client.get("/healthz")
    kept = asgi_metrics._series[("GET", "/healthz", 200)]
    # Written into the metric's own value objects (series.py), not copies.
    counted = m.HTTP_REQUESTS.labels(method="GET", route="/healthz", status="200")
    assert kept[0]._value is counted._value
    assert kept[1]._sum is m.HTTP_DURATION.labels(method="GET", route="/healthz")._sum
    monkeypatch.setattr(asgi_metrics, "_series", {})
    monkeypatch.setattr(asgi_metrics, "_SERIES_MAX", 0)  # the bound reached: not kept
    await client.get("/healthz")
    assert asgi_metrics._series == {}
    after = value("cmschat_http_requests_total", method="GET", route="/healthz", status="200")
    assert after == before + 2


def test_a_commits_events_are_counted_without_the_librarys_per_call_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Published, stored, received and the broker's lag: the same samples as the
    library's ``inc``/``observe`` would write, through the series (a few a send)."""
    calls: list[str] = []
    for kind, method in ((Counter, "inc"), (Histogram, "observe")):
        library = getattr(kind, method)

        def counted(self: object, *args: object, _library: object = library) -> None:
            calls.append(type(self).__name__)
            _library(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(kind, method, counted)
    names = (
        "cmschat_broker_published_total",
        "cmschat_messages_stored_total",
        "cmschat_broker_received_total",
        "cmschat_broker_lag_seconds_count",
    )
    before = [value(name) for name in names]
    frame = '{"type":"message.created","n":"' + secrets.token_hex(8) + '"}'
    m.committed([("message.created", frame), ("member.joined", frame + " ")])
    m.broker_received(frame)
    assert [value(name) - b for name, b in zip(names, before, strict=True)] == [2, 1, 1, 1]
    assert calls == [], "nothing went through the library's checks"
