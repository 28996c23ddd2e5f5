"""History pages and sends served past FastAPI (``chat/hot_routes.py``) answer exactly as
FastAPI's declared routes do: same status, body and headers, for the requests the fast
route takes and for those it passes on.

Each case is asked twice of the same app: with the fast route in front, then with it
taken out of the routing table (so FastAPI's route in ``chat/api.py`` answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from cmschat.chat.hot_routes import TEMPLATE, HotRoute
from cmschat.context import AppContext
from tests.api.test_messages import ROOMS, group, make_user, send
from tests.support import NamedUser

IGNORED_HEADERS = {"date", "x-request-id"}
SEND_VARYING = {"id", "seq"}
"""What differs between two accepted sends of the same draft (the clock stands still)."""


@contextmanager
def without_hot_route(app: FastAPI) -> Iterator[None]:
    """FastAPI's own routes answer everything meanwhile."""
    routes = app.router.routes
    index = next(i for i, route in enumerate(routes) if isinstance(route, HotRoute))
    hot = routes.pop(index)
    try:
        yield
    finally:
        routes.insert(index, hot)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The methods of the requests the fast route served itself (not passed on)."""
    calls: list[str] = []
    real = HotRoute.handle

    async def counting(self: HotRoute, scope: Any, receive: Any, send: Any) -> None:
        try:
            await real(self, scope, receive, send)
        finally:  # a refusal (an error raised for the handlers) is served too
            if "cmschat.hot_route_passed" not in scope:
                calls.append(scope["method"])

    monkeypatch.setattr(HotRoute, "handle", counting)
    return calls


def shown(response: httpx.Response, *, varying: set[str] = frozenset()) -> tuple[Any, ...]:
    """What a client sees, less what differs on every request."""
    headers = sorted((k, v) for k, v in response.headers.items() if k not in IGNORED_HEADERS)
    body = response.json()
    if isinstance(body, dict) and varying:
        body = {k: v for k, v in body.items() if k not in varying}
        headers = [(k, v) for k, v in headers if k != "content-length"]
    return response.status_code, body, headers


async def both(
    app: FastAPI, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The fast route's answer, then FastAPI's, to the same request."""
    fast = await client.request(method, url, **kwargs)
    with without_hot_route(app):
        declared = await client.request(method, url, **kwargs)
    return fast, declared


async def test_history_pages_answer_as_the_declared_route(
    app: FastAPI, client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, served: list[str]
) -> None:
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    for n in range(5):
        await send(client, a, room_id, f"hello 😀 {n} @bob")
    changing = await make_user(app.state.context, "changing", must_change=True)
    other_room = await group(client, await bob.login(client), changing)
    cases: list[tuple[str, dict[str, str], bool]] = [
        # (url, headers, taken by the fast route)
        (f"{ROOMS}/{room_id}/messages", a, True),
        (f"{ROOMS}/{room_id}/messages?limit=2", a, True),
        (f"{ROOMS}/{room_id}/messages?before=4&limit=2", a, True),
        (f"{ROOMS}/{room_id}/messages?after=1", a, True),
        (f"{ROOMS}/{room_id}/messages?before=3&after=1", a, True),  # 422 from the service
        (f"{ROOMS}/{other_room}/messages", a, True),  # not a member
        (f"{ROOMS}/987654321/messages", a, True),
        (f"{ROOMS}/{room_id}/messages", {}, True),  # no token
        (f"{ROOMS}/{room_id}/messages", {"Authorization": "Bearer nope"}, True),
        (f"{ROOMS}/{other_room}/messages", await changing.login(client), True),
        (f"{ROOMS}/{room_id}/messages?limit=0", a, False),
        (f"{ROOMS}/{room_id}/messages?limit=1000", a, False),
        (f"{ROOMS}/{room_id}/messages?before=x", a, False),
        (f"{ROOMS}/{room_id}/messages?before=-1", a, False),
        (f"{ROOMS}/{room_id}/messages?other=1", a, False),
        (f"{ROOMS}/0/messages", a, False),
        (f"{ROOMS}/99999999999999999999/messages", a, False),
    ]
    for url, headers, fast in cases:
        served.clear()
        answered, declared = await both(app, client, "GET", url, headers=headers)
        assert shown(answered) == shown(declared), url
        assert served == (["GET"] if fast else []), url
    # The request is counted under the route's template, as FastAPI's route is.
    assert REGISTRY.get_sample_value(
        "cmschat_http_requests_total", {"method": "GET", "route": TEMPLATE, "status": "200"}
    )


async def test_sends_answer_as_the_declared_route(
    app: FastAPI, client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, served: list[str]
) -> None:
    context: AppContext = app.state.context
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    url = f"{ROOMS}/{room_id}/messages"
    cases: list[tuple[str, dict[str, str], Any, bool]] = [
        # (url, headers, body, taken by the fast route)
        (url, a, {"content": "hi <b>there</b> 😀 @bob"}, True),
        (url, a, {"content": ""}, True),  # neither text nor files: the service refuses
        (url, {}, {"content": "no token"}, True),
        (f"{ROOMS}/987654321/messages", a, {"content": "nowhere"}, True),
        (url, a, {"content": "x", "unknown": 1}, False),
        (url, a, {"content": "x", "reply_to": 0}, False),
        (url, a, [1, 2], False),
        (url, a, "not json {", False),
    ]
    for target, headers, body, fast in cases:
        served.clear()
        kwargs: dict[str, Any] = {"headers": headers}
        if isinstance(body, str):
            kwargs["content"] = body
            kwargs["headers"] = {**headers, "Content-Type": "application/json"}
        else:
            kwargs["json"] = body
        answered, declared = await both(app, client, "POST", target, **kwargs)
        assert shown(answered, varying=SEND_VARYING) == shown(declared, varying=SEND_VARYING)
        assert served == (["POST"] if fast else []), (target, body)
    # A repeated client_id: the first message (200), the same from both.
    first = await client.post(url, headers=a, json={"content": "once", "client_id": "c-1"})
    assert first.status_code == 201
    answered, declared = await both(
        app, client, "POST", url, headers=a, json={"content": "once", "client_id": "c-1"}
    )
    assert answered.status_code == 200
    assert shown(answered) == shown(declared) and answered.json() == first.json()
    # Not JSON by its type: FastAPI answers.
    served.clear()
    answered, declared = await both(
        app, client, "POST", url, headers={**a, "Content-Type": "text/plain"}, content=b"{}"
    )
    assert shown(answered) == shown(declared) and served == []
    assert context.admission.in_flight == 0


async def test_hot_route_serves_40_at_once_refuses_a_huge_body_and_a_revoked_token(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, served: list[str]
) -> None:
    a = await alice.login(client)
    b = await bob.login(client)
    room_id = await group(client, a, bob)
    url = f"{ROOMS}/{room_id}/messages"
    await send(client, a, room_id, "before")
    pages = await asyncio.gather(*(client.get(url, headers=a) for _ in range(40)))
    assert [page.status_code for page in pages] == [200] * 40
    assert served.count("GET") == 40
    huge = b'{"content": "' + b"x" * 10_000_000 + b'"}'
    refused = await client.post(
        url, headers={**a, "Content-Type": "application/json"}, content=huge
    )
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_large"
    assert (await client.post("/api/v1/auth/logout", headers=a)).status_code in (200, 204)
    served.clear()
    assert (await client.get(url, headers=a)).status_code == 401
    assert (await client.post(url, headers=a, json={"content": "after"})).status_code == 401
    assert served == ["GET", "POST"]
    contents = [m["content"] for m in (await client.get(url, headers=b)).json()["items"]]
    assert contents == ["before"]
