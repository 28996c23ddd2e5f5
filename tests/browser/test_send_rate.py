"""The client when the server says "too fast": a short message, and the text is kept."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from cmschat.settings import ChatSettings, Settings
from tests.browser.conftest import Web
from tests.browser.test_client import message, room_with, signed_in
from tests.support import NamedUser


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A slow rate (one message per 10 s after a burst of 2), so the third send is refused."""
    return settings.model_copy(update={"chat": ChatSettings(send_rate=0.1, send_burst=2)})


async def test_a_rate_limited_send_says_so_and_keeps_the_text(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    await room_with(web, alice, bob, name="fast")
    page = await signed_in(web, alice)
    await page.locator(".room-entry", has_text="fast").click()
    for text in ("one", "two"):
        await page.fill("#composer-input", text)
        await page.keyboard.press("Enter")
        await expect(message(page, text)).to_be_visible()

    await page.fill("#composer-input", "three, too soon")
    await page.keyboard.press("Enter")
    error = page.locator(".composer .form-error")
    await expect(error).to_have_text(re.compile(r"You are sending too fast\. Wait \d+ s"))
    await expect(page.locator("#composer-input")).to_have_value("three, too soon")
    await expect(message(page, "three, too soon")).to_have_count(0)
    assert not page.errors  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("lang", "said"),
    [
        ("en", "This message is too long to send. Shorten it, or attach it as a file."),
        ("ko", "메시지가 너무 길어 보낼 수 없습니다. 줄이거나 파일로 첨부하세요."),
    ],
)
async def test_a_message_too_long_to_send_says_so_and_keeps_the_text_and_the_socket(
    web: Web, alice: NamedUser, bob: NamedUser, lang: str, said: str
) -> None:
    await room_with(web, alice, bob, name="long")
    page = await web.page()
    await page.add_init_script(f"localStorage.setItem('cmschat.lang', '{lang}')")
    await web.sign_in(page, alice.username, alice.password)
    await page.locator(".room-entry", has_text="long").click()
    too_long = "word " * 14_000  # 70,000 characters: over the 64 KiB frame limit
    await page.fill("#composer-input", too_long)
    await page.keyboard.press("Enter")

    await expect(page.locator(".composer .form-error")).to_have_text(said)
    await expect(page.locator("#composer-input")).to_have_value(too_long)
    # Still connected: the next message goes through on the same socket.
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    await page.fill("#composer-input", "shorter")
    await page.keyboard.press("Enter")
    await expect(message(page, "shorter")).to_be_visible()
    assert not page.errors  # type: ignore[attr-defined]
