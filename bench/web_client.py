"""The web client in Chromium: how much it loads, and how fast switching rooms renders.

Starts a server (``common.environment``), seeds two rooms with ``--messages`` messages
each, signs in with headless Chromium (Debian's, as the browser tests use) and reports:

* the JavaScript and CSS the first load fetched, uncompressed (goal: under 150 KB);
* the time from clicking a room to its cached history being on screen, over ``--switches``
  switches between the two rooms (goal: under 100 ms).

Run::

    .venv/bin/python bench/web_client.py --messages 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from typing import Any

import common
import history
from playwright.async_api import async_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SWITCH = """async (roomId) => {
  const button = document.querySelector(`.room-entry[data-room-id="${roomId}"]`);
  const started = performance.now();
  button.click();
  // The cached history renders before openRoom's first await: measure up to the paint.
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const count = document.querySelectorAll('.messages .message').length;
  return { ms: performance.now() - started, count };
}"""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "tool": "web_client",
        "messages_per_room": args.messages,
        "machine": common.machine(),
        "source": common.source_state(),
    }
    async with common.environment("sqlite") as (backend, servers, api):
        users = await api.create_users(2, prefix="w")
        rooms = [await api.create_room(users[0], users, f"room {n}") for n in range(2)]
        for room in rooms:
            await history.seed(
                backend.database_url,
                room_id=room,
                author_id=users[1].id,
                count=args.messages,
                batch=1000,
            )
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=FLAGS
            )
            page = await browser.new_page()
            loaded: dict[str, int] = {}

            async def count(response: Any) -> None:
                kind = response.request.resource_type
                if kind in ("script", "stylesheet"):
                    loaded[response.url] = len(await response.body())

            page.on("response", lambda r: asyncio.ensure_future(count(r)))
            await page.goto(servers[0].http + "/")
            await page.fill("#username", users[0].username)
            await page.fill("#password", api.password)
            await page.click("button[type=submit]")
            await page.wait_for_selector('.connection[data-state="connected"]')
            for room in rooms:  # load each room's newest page once
                await page.click(f'.room-entry[data-room-id="{room}"]')
                await page.wait_for_selector(".messages .message")
            timings = []
            for n in range(args.switches):
                measured = await page.evaluate(SWITCH, rooms[n % 2])
                if measured["count"] < min(args.messages, 50):
                    raise RuntimeError(f"room rendered {measured['count']} messages")
                timings.append(measured["ms"])
            await browser.close()
        timings.sort()
        scripts = sum(size for url, size in loaded.items() if url.endswith(".js"))
        styles = sum(size for url, size in loaded.items() if url.endswith(".css"))
        result.update(
            {
                "files": len(loaded),
                "js_bytes": scripts,
                "css_bytes": styles,
                "js_css_kib": (scripts + styles) / 1024,
                "switch_ms_p50": statistics.median(timings),
                "switch_ms_max": timings[-1],
                "switches": len(timings),
            }
        )
    return result


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    common.print_table(result.items())
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
