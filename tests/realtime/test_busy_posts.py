"""A send posted while the process is full is refused at the app's door (api/busy.py): the
route's own 503 ``busy`` answer, the connection kept for the next request, and one summary
log line for many refusals instead of an access line each."""

from __future__ import annotations

import asyncio
import json
import re
from typing import cast

import h11
import httpx
import pytest

from cmschat.api.busy import BusyRefusal
from cmschat.app import CmschatApp, create_app
from cmschat.clock import FakeClock
from cmschat.observability.middleware import SECURITY_HEADERS
from cmschat.settings import Settings
from tests.api.test_hardening import PROXY
from tests.observability.metrics_support import value
from tests.realtime.test_admission import refusals
from tests.realtime.test_gateway import make_room
from tests.realtime.wsclient import TIMEOUT, serve_app
from tests.support import NamedUser

ROUTE = "/api/v1/rooms/{room_id}/messages"


class KeptConnection:
    """One HTTP/1.1 connection to the live server, several requests in turn (h11)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    async def post(
        self, host: str, path: str, headers: dict[str, str], body: bytes, *, late: bool = False
    ) -> tuple[h11.Response, bytes]:
        """POST ``body`` (``late``: only once the answer has come); the response, its body."""
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = [("Host", host), ("Content-Type", "application/json"), *headers.items()]
        fields.append(("Content-Length", str(len(body))))
        self.writer.write(self.conn.send(h11.Request(method="POST", target=path, headers=fields)))
        if not late:
            self._send_body(body)
        await self.writer.drain()
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
                assert data, "the server closed the connection"
                self.conn.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                if late:
                    self._send_body(body)
                    await self.writer.drain()
                return response, b"".join(chunks)

    def _send_body(self, body: bytes) -> None:
        self.writer.write(self.conn.send(h11.Data(data=body)) or b"")
        self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")


def headers_of(response: h11.Response) -> dict[str, str]:
    """Header names as written on the wire, to their values."""
    return {bytes(raw).decode(): bytes(v).decode() for raw, v in response.headers.raw_items()}


async def test_a_full_process_answers_posts_503_at_the_door_and_keeps_the_connection(
    settings: Settings,
    clock: FakeClock,
    alice: NamedUser,
    bob: NamedUser,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(deep=True)
    settings.chat.busy_retry_after_seconds = 2
    async with serve_app(settings, clock) as (live, http):
        a = await alice.login(http)
        room = await make_room(http, a, bob)
        path = f"/api/v1/rooms/{room}/messages"
        admission = live.app.state.context.admission
        busy = cast(CmschatApp, live.app).busy
        assert isinstance(busy, BusyRefusal)
        host, port = live.host.split(":")
        kept = KeptConnection(*await asyncio.open_connection(host, int(port)))
        before = refusals()
        requests = value("cmschat_http_requests_total", method="POST", route=ROUTE, status="503")
        all_logs.clear()
        admission.in_flight = admission.limit  # as if that many sends were being stored
        try:
            refused = [
                # The first one's body arrives after the answer: discarded all the same.
                await kept.post(
                    live.host, path, a, json.dumps({"content": f"m{n}"}).encode(), late=n == 0
                )
                for n in range(5)
            ]
        finally:
            admission.in_flight = 0
        ids = set()
        for response, raw in refused:
            assert response.status_code == 503
            sent = headers_of(response)
            assert sent["retry-after"] == "2"
            assert sent["Cache-Control"] == "no-store"
            for name, header in SECURITY_HEADERS.items():
                assert sent[name] == header
            assert re.fullmatch(r"[0-9a-f]{32}", sent["X-Request-ID"])
            ids.add(sent["X-Request-ID"])
            assert json.loads(raw) == {
                "error": {"code": "busy", "message": "the server is busy; send again in a moment"}
            }
        assert len(ids) == 5
        assert refusals() == {**before, ("http", "process"): before["http", "process"] + 5}
        assert (
            value("cmschat_http_requests_total", method="POST", route=ROUTE, status="503")
            == requests + 5
        )
        # No access line for any of them; one summary says how many.
        assert [r for r in all_logs.records if r.name == "cmschat.http"] == []
        busy.log.flush()
        [summary] = [r for r in all_logs.records if r.name == "cmschat.http"]
        assert summary.getMessage().startswith(f"refused 5 POST {ROUTE} 503 busy")
        assert getattr(summary, "event.action") == "http.refused"
        # The same connection carries the next send, accepted now there is room.
        accepted, raw = await kept.post(live.host, path, a, b'{"content": "after"}')
        assert accepted.status_code == 201
        assert json.loads(raw)["content"] == "after"
        kept.writer.close()
        await kept.writer.wait_closed()


async def test_a_refusal_carries_hsts_as_the_stack_would(
    settings: Settings, clock: FakeClock
) -> None:
    app = create_app(settings.model_copy(update={"trusted_proxies": [PROXY]}), clock=clock)
    async with app.router.lifespan_context(app):
        admission = app.state.context.admission
        transport = httpx.ASGITransport(app=app, client=(PROXY, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            admission.in_flight = admission.limit
            try:
                url = "/api/v1/rooms/1/messages"
                https = await http.post(url, headers={"X-Forwarded-Proto": "https"}, json={})
                plain = await http.post(url, json={})
            finally:
                admission.in_flight = 0
    assert https.status_code == plain.status_code == 503
    assert https.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in plain.headers
