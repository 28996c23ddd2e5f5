"""The console looks finished: every page, with data in every table, at desktop and phone
widths, in English and Korean. Geometry is measured, not eyeballed: header cells line up
with their columns, nothing sticks out of a 390 px screen, and no page logs an error or
makes a request that fails."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Request, Response, expect

from tests.browser.conftest import Web
from tests.support import NamedUser

# Pages this suite holds to the full bar (the dashboard and monitoring have their own).
PAGES = [
    "users",
    "rooms",
    "moderation",
    "notices",
    "cannedReplies",
    "retention",
    "audit",
    "backups",
]
OTHER_PAGES = ["dashboard", "monitoring"]
PHONE, DESKTOP = 390, 1280
# The screenshots docs/web.md shows (CMSCHAT_SCREENSHOTS=docs), with data in them.
SHOTS = {
    ("en", DESKTOP): ("users", "notices", "retention", "audit"),
    ("ko", DESKTOP): ("users", "moderation"),
    ("en", PHONE): ("users",),
    ("ko", PHONE): ("users", "rooms"),
}
HANGUL = re.compile(r"[\uac00-\ud7a3]")

# Header cells whose left edge is off its column's cells by more than half a pixel, per table.
MISALIGNED = """() => [...document.querySelectorAll('.console-main table.data')].map((table) => {
  const heads = [...table.querySelectorAll('thead th')]
    .map((th) => th.getBoundingClientRect().left);
  const rows = [...table.querySelectorAll('tbody tr:not(.empty-row)')];
  const bad = [];
  for (const row of rows) {
    [...row.children].forEach((td, i) => {
      const left = td.getBoundingClientRect().left;
      if (Math.abs(left - heads[i]) > 0.5) bad.push([i, heads[i], left]);
    });
  }
  return { rows: rows.length, columns: heads.length, bad };
})"""

# Visible elements whose box reaches past the viewport's right edge (a phone's screen), or
# whose text runs out of their own box (a long unbreakable word).
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const spills = el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0
      && getComputedStyle(el).overflowX === 'visible';
    if (box.right > width + 0.5 || spills) {
      out.push(`${el.tagName}.${el.className} ${Math.round(box.right)} ${el.scrollWidth}`);
    }
  }
  return { scroll: document.documentElement.scrollWidth, width, out: out.slice(0, 10) };
}"""

# The words a reader meets on a page: headers, buttons, field names, options, empty states.
WORDS = """() => [...document.querySelectorAll(
  '.console-main h1, .console-main h2, .console-main th, .console-main button, '
  + '.console-main .field-label, .console-main option, .console-main .empty-row td, '
  + '.console-nav a, .console-nav button')]
  .filter((el) => el.getClientRects().length || el.tagName === 'OPTION' || el.tagName === 'TH')
  .map((el) => el.textContent.trim()).filter(Boolean)"""


@dataclass
class Trouble:
    """Everything a page did wrong while we watched."""

    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def watch(page: Page) -> Trouble:
    trouble = Trouble()
    page.on(
        "console",
        lambda m: trouble.console.append(m.text) if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: trouble.console.append(str(e)))

    def failed(request: Request) -> None:
        trouble.failed.append(f"{request.method} {request.url} {request.failure}")

    def answered(response: Response) -> None:
        if response.status >= 400:
            trouble.failed.append(f"{response.request.method} {response.url} {response.status}")

    page.on("requestfailed", failed)
    page.on("response", answered)
    return trouble


async def seed(web: Web, admin: NamedUser, alice: NamedUser, bob: NamedUser) -> None:
    """Data in every table: users, rooms, messages, notices, replies, a hold, a backup."""
    async with httpx.AsyncClient(base_url=web.url, timeout=60) as http:
        a, b, boss = await alice.login(http), await bob.login(http), await admin.login(http)

        async def call(method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
            response = await http.request(method, "/api/v1" + path, headers=headers, **kw)
            assert response.status_code < 300, (path, response.text)
            return response.json() if response.content else None

        team = (
            await call(
                "POST",
                "/rooms",
                a,
                json={"kind": "group", "name": "기획팀 회의실", "member_ids": [bob.id]},
            )
        )["id"]
        news = (
            await call(
                "POST",
                "/rooms",
                boss,
                json={"kind": "channel", "name": "announcements", "member_ids": []},
            )
        )["id"]
        await call("POST", "/rooms", a, json={"kind": "direct", "member_ids": [bob.id]})
        await call(
            "POST", f"/rooms/{team}/messages", a, json={"content": "분기 보고서는 **금요일**까지"}
        )
        await call("POST", f"/rooms/{team}/messages", b, json={"content": "buy cheap watches now"})
        await call(
            "POST",
            "/admin/users",
            boss,
            json={"username": "kim.minji", "display_name": "김민지", "role": "agent"},
        )
        notice = await call(
            "POST",
            "/admin/notices",
            boss,
            json={
                "title": "점검 안내",
                "body_html": "<p>토요일 <b>02:00</b>에 점검합니다.</p>",
                "room_ids": [team, news],
            },
        )
        await call("POST", f"/admin/notices/{notice['id']}/publish", boss)
        await call(
            "POST",
            "/admin/notices",
            boss,
            json={
                "title": "Holiday hours",
                "body_html": "<ul><li>Closed on the 25th</li></ul>",
                "room_ids": None,
            },
        )
        await call(
            "POST",
            "/admin/canned-replies",
            boss,
            json={
                "shortcut": "refund",
                "title": "환불 안내",
                "body": "환불은 영업일 기준 3일 걸립니다.",
            },
        )
        await call(
            "PUT",
            f"/admin/retention/rooms/{team}",
            boss,
            json={"legal_hold": True, "legal_hold_reason": "case 2026-17"},
        )
        await call(
            "PUT", "/admin/retention/defaults", boss, json={"message_days": 1, "attachment_days": 1}
        )
        await call("POST", "/admin/backups", boss, json={"kind": "full"})


async def open_console(
    web: Web, admin: NamedUser, *, lang: str, width: int
) -> tuple[Page, Trouble]:
    page = await web.page(width=width, height=900)
    await page.add_init_script(f"localStorage.setItem('cmschat.lang', '{lang}')")
    trouble = watch(page)
    await web.sign_in(page, admin.username, admin.password, "/console.html#users")
    await expect(page.locator(".console-main[data-ready=true]")).to_be_visible()
    return page, trouble


async def visit(page: Page, name: str) -> None:
    await page.evaluate("(name) => { window.location.hash = name; }", name)
    await expect(page.locator(f".console-main[data-page={name}][data-ready=true]")).to_be_visible()
    await expect(page.locator(".console-main > .form-error:not(:empty)")).to_have_count(0)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ko"])
async def test_every_console_page_is_aligned_fits_a_phone_and_speaks_the_language(
    web: Web, admin: NamedUser, alice: NamedUser, bob: NamedUser, lang: str
) -> None:
    await seed(web, admin, alice, bob)
    for width in (DESKTOP, PHONE):
        page, trouble = await open_console(web, admin, lang=lang, width=width)
        if width == PHONE:
            toggle = page.locator(".menu-toggle")
            await expect(toggle).to_be_visible()
            await expect(page.locator(".nav-pages")).to_be_hidden()
            await toggle.click()
            await expect(page.locator(".nav-pages a[data-page=rooms]")).to_be_visible()
            await page.click(".nav-pages a[data-page=rooms]")
            await expect(page.locator(".nav-pages")).to_be_hidden()
        for name in PAGES + OTHER_PAGES:
            await visit(page, name)
            overflow = await page.evaluate(OVERFLOWING)
            assert overflow["out"] == [], (lang, width, name, overflow)
            assert overflow["scroll"] <= overflow["width"], (lang, width, name, overflow)
            if name in OTHER_PAGES:
                continue
            tables = await page.evaluate(MISALIGNED)
            assert tables and all(t["rows"] > 0 for t in tables), (name, "a table without data")
            if width == DESKTOP:
                assert [t["bad"] for t in tables] == [[] for _ in tables], (lang, name, tables)
            words = await page.evaluate(WORDS)
            assert words, name
            if lang == "ko":
                english = [
                    w
                    for w in words
                    if not HANGUL.search(w)
                    and w not in ("—", "OK")
                    and not w.startswith(("/", "#", "기획팀", "announcements"))
                    and w not in ("root-admin", "alice", "bob")
                ]
                # Names and room titles are data, not interface: anything else is a leftover.
                assert english == [], (name, english)
            if name in SHOTS[lang, width]:
                await web.screenshot(page, f"console-{name}-{lang}-{width}")
        assert trouble.console == [], trouble.console
        assert trouble.failed == [], trouble.failed


async def test_console_shows_names_not_ids_and_a_favicon(
    web: Web, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    await seed(web, admin, alice, bob)
    page, trouble = await open_console(web, admin, lang="en", width=DESKTOP)
    await visit(page, "moderation")
    row = page.locator("tr", has_text="buy cheap watches now")
    await expect(row.locator("td[data-label=Room]")).to_have_text("기획팀 회의실")
    await visit(page, "notices")
    published = page.locator("tr", has_text="점검 안내")
    await expect(published.locator("td[data-label=Audience]")).to_have_text(
        "기획팀 회의실, announcements"
    )
    await expect(published.locator("td[data-label=State]")).to_have_text("Published")
    await visit(page, "audit")
    hold = page.locator("tr", has_text="retention.legal_hold_placed")
    await expect(hold.locator("td[data-label=Target]")).to_have_text("Room 기획팀 회의실")
    created = page.locator("tr", has_text="user.created").filter(has_text="김민지")
    await expect(created.locator("td[data-label=Target]")).to_have_text("User kim.minji")
    icon = await page.get_attribute("link[rel=icon]", "href")
    async with httpx.AsyncClient(base_url=web.url) as http:
        served = await http.get("/" + str(icon))
        chat = await http.get("/")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in served.content
    assert 'rel="icon"' in chat.text
    assert trouble.console == [] and trouble.failed == []
