"""The console's dashboard and monitoring pages draw their charts, in English and Korean."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, expect

from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.monitoring.sampler import STOPPED, Instance, record_sample
from cmschat.observability.minutes import Taken
from tests.browser.conftest import Web
from tests.monitoring.alertmanager import alertmanager, fire
from tests.support import NamedUser

CHARTS = ["messages", "users", "requests", "latency", "websockets"]
SAMPLE_MINUTES = 150

# Pixels of a series' colour (blue, red, green or amber, as drawn or filled) in a canvas:
# axes and grid are grey, so only drawn data counts.
COLOURED_PIXELS = """(figure) => {
  const canvas = figure.querySelector("canvas");
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 40 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured += 1;
  }
  return coloured;
}"""


START = datetime.now(UTC) - timedelta(days=6, hours=10)


@pytest.fixture
def clock() -> FakeClock:
    """The in-process app (which seeds the messages) starts six days ago."""
    return FakeClock(START)


async def seed(
    client: httpx.AsyncClient,
    context: AppContext,
    clock: FakeClock,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    """A week of messages from two people, a backup and a drill, and 150 minutes of
    samples from two instances."""
    alice_headers, bob_headers = await alice.login(client), await bob.login(client)
    room = await client.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "ops", "member_ids": [bob.id]},
        headers=alice_headers,
    )
    room_id = room.json()["id"]
    rng = random.Random(7)
    for day in range(7):
        clock.advance(seconds=(START + timedelta(days=day) - clock.now()).total_seconds())
        # Signed in again each day: a session left idle for a day expires.
        alice_headers, bob_headers = await alice.login(client), await bob.login(client)
        for n in range(3 + day):
            headers = bob_headers if n % 3 == 0 else alice_headers
            sent = await client.post(
                f"/api/v1/rooms/{room_id}/messages",
                json={"content": f"day {day}, message {n}"},
                headers=headers,
            )
            assert sent.status_code == 201, sent.text
            clock.advance(minutes=rng.randint(20, 60))
    admin_headers = await admin.login(client)
    backup = await client.post(
        "/api/v1/admin/backups", json={"kind": "full"}, headers=admin_headers
    )
    assert backup.status_code == 201, backup.text
    drill = await client.post("/api/v1/admin/backups/drill", headers=admin_headers)
    assert drill.status_code == 201, drill.text
    now = datetime.now(UTC)
    sampling = FakeClock(now - timedelta(minutes=SAMPLE_MINUTES))
    instances = [
        Instance(id=f"web-{n}:4{n}", host=f"web-{n}", version="0.1.0", started_at=now)
        for n in (1, 2)
    ]
    for minute in range(SAMPLE_MINUTES + 1):
        for n, instance in enumerate(instances):
            wave = 1 + 0.4 * math.sin((minute + 40 * n) / 25) + rng.uniform(-0.1, 0.1)
            await record_sample(
                context.db,
                instance=instance,
                clock=sampling,
                taken=Taken(
                    requests=int(120 * wave),
                    errors=rng.choice([0, 0, 0, 0, 1, 2]) if 60 < minute < 80 else 0,
                    p95_ms=round(35 * wave + 10 * n, 1),
                    messages=3,
                    websockets=40 + minute // 10 + 5 * n + rng.randint(-2, 2),
                ),
                checks={"database": "ok", "storage": "ok"},
            )
        sampling.advance(minutes=1)
    # A third instance served the first half hour and was stopped by a release.
    retired = Instance(id="web-3:43", host="web-3", version="0.0.9", started_at=now)
    earlier = FakeClock(now - timedelta(minutes=SAMPLE_MINUTES))
    for minute in range(30):
        taken = Taken(requests=60, errors=0, p95_ms=30.0, messages=1, websockets=20)
        last = minute == 29
        await record_sample(
            context.db,
            instance=retired,
            clock=earlier,
            taken=taken,
            checks=STOPPED if last else {"database": "ok", "storage": "ok"},
        )
        earlier.advance(minutes=1)


async def open_console(web: Web, admin: NamedUser, *, width: int, korean: bool = False) -> Page:
    page = await web.page(width=width, height=900)
    console_errors: list[str] = []

    def console_error(m: ConsoleMessage) -> None:
        # The browser asks for /favicon.ico by itself; the client ships none.
        if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico"):
            console_errors.append(f"{m.text} {m.location}")

    page.on("console", console_error)
    page.console_errors = console_errors  # type: ignore[attr-defined]
    if korean:
        await page.add_init_script("localStorage.setItem('cmschat.lang', 'ko')")
    await web.sign_in(page, admin.username, admin.password, "/console.html#dashboard")
    return page


async def assert_charts_drawn(page: Page, names: list[str], *, pixels: int = 200) -> None:
    for name in names:
        figure = page.locator(f"figure[data-chart={name}]")
        await expect(figure).to_have_attribute("data-drawn", "true")
        assert await figure.evaluate(COLOURED_PIXELS) > pixels, f"{name}: nothing drawn"
        # The plot fits its card (the card hides overflow, so the page check cannot see it).
        plot, card = await figure.locator(".uplot").bounding_box(), await figure.bounding_box()
        assert plot and card and plot["x"] + plot["width"] <= card["x"] + card["width"], name
        values = await figure.locator(".u-legend .u-series:not(:first-child) .u-value").all()
        assert values, f"{name}: no legend"
        for value in values:
            text = await value.inner_text()
            assert any(c.isdigit() for c in text), f"{name}: legend shows {text!r}"


async def no_horizontal_overflow(page: Page) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"


async def test_dashboard_charts_render_with_data_in_english_and_korean(
    web: Web,
    client: httpx.AsyncClient,
    context: AppContext,
    clock: FakeClock,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    await seed(client, context, clock, admin, alice, bob)

    page = await open_console(web, admin, width=1280)
    await assert_charts_drawn(page, CHARTS)
    # The instance a release stopped is not counted against the ready ones.
    await expect(page.locator("[data-tile=instances] strong")).to_have_text("2 / 2")
    await expect(page.locator("[data-tile=instances] strong")).to_have_class("status-ok")
    await expect(page.locator("[data-tile=instances]")).to_contain_text("1 stopped")
    await expect(page.locator("[data-tile=alerts]")).to_contain_text("not configured")
    await expect(page.locator("[data-tile=backups]")).to_contain_text("restore drill OK")
    # Nobody has a WebSocket open: none online anywhere, none on this instance.
    await expect(page.locator("[data-tile=online] strong")).to_have_text("0")
    await expect(page.locator("[data-tile=online]")).to_contain_text("0 on this instance")
    await expect(page.locator("figure[data-chart=messages] figcaption")).to_have_text(
        "Messages per hour"
    )
    await no_horizontal_overflow(page)
    await page.screenshot(path=str(web.shots / "console-dashboard.png"), full_page=True)
    # Narrowing the window: the charts follow their cards.
    await page.set_viewport_size({"width": 390, "height": 900})
    await page.wait_for_function(
        """() => [...document.querySelectorAll("figure[data-chart]")].every((f) => {
          const plot = f.querySelector(".uplot");
          return plot && plot.getBoundingClientRect().right <= f.getBoundingClientRect().right;
        })"""
    )
    await no_horizontal_overflow(page)
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(web.url + "/console.html#monitoring")
    await expect(page.locator("table.instances tbody tr")).to_have_count(3)
    stopped = page.locator("table.instances tbody tr", has_text="web-3:43").locator("strong")
    await expect(stopped).to_have_text("stopped")
    await expect(stopped).to_have_class("muted")
    await assert_charts_drawn(page, ["requests", "latency", "websockets"])
    await page.select_option("select[aria-label=Period]", "1")
    await expect(page.locator("h2", has_text="Last hour")).to_be_visible()
    await assert_charts_drawn(page, ["requests", "latency", "websockets"])

    phone = await open_console(web, admin, width=390, korean=True)
    await assert_charts_drawn(phone, CHARTS)
    await expect(phone.locator("figure[data-chart=messages] figcaption")).to_have_text(
        "시간당 메시지"
    )
    await expect(phone.locator("[data-tile=alerts]")).to_contain_text("미설정")
    await expect(phone.locator("[data-tile=instances]")).to_contain_text("종료 1")
    await expect(phone.locator("[data-tile=online]")).to_contain_text("이 인스턴스 0")
    await no_horizontal_overflow(phone)
    await phone.screenshot(path=str(web.shots / "console-dashboard-ko-390.png"), full_page=True)
    for opened in (page, phone):
        assert opened.errors == []  # type: ignore[attr-defined]
        assert opened.console_errors == []  # type: ignore[attr-defined]


async def test_charts_without_data_say_so_and_the_page_updates_itself(
    web: Web, context: AppContext, admin: NamedUser
) -> None:
    page = await web.page(width=1280, height=900)
    await page.clock.install()  # the page's timers run when the test says so
    await web.sign_in(page, admin.username, admin.password, "/console.html#dashboard")
    for name in CHARTS:
        figure = page.locator(f"figure[data-chart={name}]")
        await expect(figure).to_have_attribute("data-empty", "true")
    await expect(page.locator("figure[data-chart=messages]")).to_contain_text(
        "No messages in the last 7 days."
    )
    await expect(page.locator("figure[data-chart=requests]")).to_contain_text(
        "every instance writes one per minute"
    )
    await expect(page.locator("[data-tile=instances] strong")).to_have_text("0 / 0")

    # An instance writes its first sample; a minute later the dashboard shows it.
    now = datetime.now(UTC)
    instance = Instance(id="web-1:41", host="web-1", version="0.1.0", started_at=now)
    await record_sample(
        context.db,
        instance=instance,
        clock=FakeClock(now),
        taken=Taken(requests=120, errors=0, p95_ms=18.0, messages=0, websockets=30),
        checks={"database": "ok"},
    )
    await page.clock.fast_forward(61_000)
    await expect(page.locator("[data-tile=instances] strong")).to_have_text("1 / 1")
    # One sample is one dot on each chart.
    await assert_charts_drawn(page, ["requests", "latency", "websockets"], pixels=20)
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_firing_alerts_show_on_the_dashboard_and_the_monitoring_page(
    web: Web,
    client: httpx.AsyncClient,
    context: AppContext,
    clock: FakeClock,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
    tmp_path: Path,
) -> None:
    await seed(client, context, clock, admin, alice, bob)
    with alertmanager(tmp_path) as base:
        fire(
            base,
            [
                {
                    "labels": {"alertname": "CmschatHigh5xxRatio", "severity": "critical"},
                    "annotations": {"summary": "more than 5 % of requests fail with 5xx"},
                    "startsAt": (datetime.now(UTC) - timedelta(minutes=12)).isoformat(),
                },
                {
                    "labels": {"alertname": "CmschatSlowRequests", "severity": "warning"},
                    "annotations": {"summary": "API p95 above 1 s for 10 minutes"},
                    "startsAt": (datetime.now(UTC) - timedelta(minutes=4)).isoformat(),
                },
            ],
            tmp_path,
        )
        web.settings.monitoring.alertmanager_url = base
        page = await open_console(web, admin, width=1280)
        tile = page.locator("[data-tile=alerts]")
        await expect(tile.locator("strong")).to_have_text("2")
        await expect(tile).to_contain_text("CmschatHigh5xxRatio")
        await page.goto(web.url + "/console.html#monitoring")
        rows = page.locator("table.alerts tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.first).to_contain_text("critical")
        await expect(rows.first).to_contain_text("more than 5 % of requests fail")
        await assert_charts_drawn(page, ["requests", "latency", "websockets"])
        await page.screenshot(path=str(web.shots / "console-monitoring.png"), full_page=True)
    # Alertmanager gone: the pages still load and say so.
    await page.reload()
    await expect(page.locator("p.status-bad[role=alert]")).to_contain_text(
        "Alertmanager does not answer"
    )
    await assert_charts_drawn(page, ["requests", "latency", "websockets"])
    assert page.errors == []  # type: ignore[attr-defined]
