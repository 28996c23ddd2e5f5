"""A send retried over HTTP after the socket dropped is stored once (same client_id)."""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import WebSocketRoute, expect

from tests.browser.conftest import Web
from tests.browser.test_client import message, room_with
from tests.support import NamedUser


async def test_a_send_whose_socket_drops_before_the_ack_is_stored_once(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    room = await room_with(web, alice, bob, name="flaky")
    page = await web.page()
    dropped: dict[str, str] = {}

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        async def from_server(frame: str | bytes) -> None:
            parsed = json.loads(frame)
            if parsed.get("type") == "ack" and not dropped:
                # The server stored the message; the socket dies before the ack arrives.
                dropped["client_id"] = parsed["client_id"]
                await ws.close(code=4000, reason="network lost")
                return
            ws.send(frame)

        server.on_message(from_server)

    await page.route_web_socket(re.compile(r".*/api/v1/ws$"), route)
    await web.sign_in(page, alice.username, alice.password)
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")

    await page.fill("#composer-input", "sent exactly once")
    await page.keyboard.press("Enter")
    await expect(page.locator("#composer-input")).to_have_value("")  # the send completed
    assert dropped, "the socket was never dropped after a send"

    async with httpx.AsyncClient(base_url=web.url) as http:
        headers = await bob.login(http)
        history = await http.get(f"/api/v1/rooms/{room}/messages", headers=headers)
    contents = [m["content"] for m in history.json()["items"]]
    assert contents == ["sent exactly once"], contents
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    await expect(message(page, "sent exactly once")).to_have_count(1)
    assert page.errors == []  # type: ignore[attr-defined]
