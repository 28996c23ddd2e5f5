"""A new user's first minutes in the chat client (issue 14): presence in the room header
whatever the order of loading, nothing sent without a room, an empty state that shows the
ways in, and room-list previews that read as text rather than markdown. English and Korean
where text shows."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Web
from tests.browser.test_client import message, room_with, send_api, signed_in
from tests.support import NamedUser

TEXTS = {
    "en": {
        "online": "online",
        "no_rooms": "You are in no conversation yet.",
        "start": "Start a conversation",
        "browse": "Browse channels",
        "placeholder": "Open a room to write a message",
    },
    "ko": {
        "online": "온라인",
        "no_rooms": "아직 참여한 대화가 없습니다.",
        "start": "대화 시작하기",
        "browse": "채널 둘러보기",
        "placeholder": "메시지를 쓰려면 대화방을 여세요",
    },
}


async def signed_in_as(web: Web, user: NamedUser, lang: str) -> Page:
    """Signed in with the client set to ``lang`` (as the language menu would leave it)."""
    page = await web.page()
    await page.add_init_script(f"localStorage.setItem('cmschat.lang', '{lang}')")
    await web.sign_in(page, user.username, user.password)
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    return page


@pytest.mark.parametrize("lang", ["en", "ko"])
async def test_the_second_user_to_arrive_sees_both_online(
    web: Web, alice: NamedUser, bob: NamedUser, lang: str
) -> None:
    await room_with(web, alice, bob, name="planning")
    a = await signed_in(web, alice)
    await expect(a.locator(".room-meta")).to_have_text("2 · 1 online")

    # Bob's header is drawn before his socket's first presence list arrives.
    b = await signed_in_as(web, bob, lang)
    await expect(b.locator(".room-meta")).to_have_text(f"2 · 2 {TEXTS[lang]['online']}")
    await expect(a.locator(".room-meta")).to_have_text("2 · 2 online")  # live, as before
    assert b.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("lang", ["en", "ko"])
async def test_without_rooms_nothing_can_be_sent_and_the_ways_in_are_offered(
    web: Web, alice: NamedUser, bob: NamedUser, lang: str
) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        await http.post(
            "/api/v1/rooms",
            json={"kind": "channel", "name": "announcements", "member_ids": []},
            headers=await alice.login(http),
        )
    text = TEXTS[lang]
    page = await web.page()
    nowhere: list[str] = []
    page.on("request", lambda r: nowhere.append(r.url) if "/null" in r.url else None)
    await page.add_init_script(f"localStorage.setItem('cmschat.lang', '{lang}')")
    await web.sign_in(page, bob.username, bob.password)

    empty = page.locator(".messages .no-rooms")
    await expect(empty).to_contain_text(text["no_rooms"])
    composer = page.locator("#composer-input")
    await expect(composer).to_be_disabled()
    await expect(composer).to_have_attribute("placeholder", text["placeholder"])
    await expect(page.locator(".composer button[type=submit]")).to_be_disabled()
    await expect(page.locator("#file-input")).to_be_disabled()
    await web.screenshot(page, f"chat-no-rooms-{lang}")

    await empty.get_by_role("button", name=text["start"]).click()
    await expect(page.locator("dialog #room-kind")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("dialog")).to_have_count(0)

    await empty.get_by_role("button", name=text["browse"]).click()
    await page.locator("dialog li", has_text="announcements").locator("button").click()
    await expect(page.locator(".room-title")).to_have_text("announcements")
    await expect(composer).to_be_enabled()
    await composer.fill("안녕하세요, hello")
    await page.keyboard.press("Enter")
    await expect(message(page, "안녕하세요, hello")).to_be_visible()
    await expect(page.locator(".form-error")).to_have_text("")
    assert nowhere == []
    assert page.errors == []  # type: ignore[attr-defined]


async def test_the_room_list_preview_is_plain_text(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    room = await room_with(web, alice, bob, name="finance")
    await send_api(web, alice, room, "the **budget** is `final`\nsee *page 2*")
    b = await signed_in(web, bob)
    entry = b.locator(f'.room-entry[data-room-id="{room}"] .last-message')
    await expect(entry).to_have_text("the budget is final see page 2")  # as loaded

    await send_api(web, alice, room, "**신규** 예산 _확정_")
    await expect(entry).to_have_text("신규 예산 확정")  # as it arrives live
    await expect(b.locator(".message-body strong", has_text="신규")).to_be_visible()
