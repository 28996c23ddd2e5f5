"""The same web files served from another origin, configured by config.json alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fastapi import FastAPI
from playwright.async_api import expect
from starlette.staticfiles import StaticFiles

from tests.browser.conftest import Web
from tests.browser.test_client import message, room_with, send_api
from tests.processes import free_port
from tests.realtime.wsclient import serve
from tests.support import NamedUser

WEB = Path(__file__).resolve().parents[2] / "web"


async def test_the_client_works_from_another_origin(
    web: Web, alice: NamedUser, bob: NamedUser, tmp_path: Path
) -> None:
    hosted = tmp_path / "site"
    shutil.copytree(WEB, hosted)
    (hosted / "config.json").write_text(json.dumps({"apiBase": web.url}))
    static = FastAPI()
    static.mount("/", StaticFiles(directory=hosted, html=True))
    port = free_port()
    origin = f"http://localhost:{port}"  # another origin than the API's 127.0.0.1
    await web.stop()
    web.settings = web.settings.model_copy(update={"cors_origins": [origin]})
    await web.start()
    room = await room_with(web, alice, bob)

    async with serve(static, port=port):
        page = await web.page()
        await page.goto(origin + "/")
        await page.fill("#username", alice.username)
        await page.fill("#password", alice.password)
        await page.click("button[type=submit]")
        await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
        await send_api(web, bob, room, "hello across origins")
        await expect(message(page, "hello across origins")).to_be_visible()
        await page.fill("#composer-input", "and back")
        await page.keyboard.press("Enter")
        await expect(message(page, "and back")).to_be_visible()
