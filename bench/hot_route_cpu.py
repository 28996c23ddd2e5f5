"""CPU per history page and per send with ``chat/hot_routes.py`` in front and without it
(FastAPI's declared routes answering), in one process, interleaved.

Paired this way, a busy machine (other processes, CPU frequency) weighs on both alike:
blocks of ``--block`` requests alternate between the two, ``--blocks`` times, and the
figure is the median over blocks of CPU microseconds per request (``time.process_time``,
the in-process client included), with the median of each pair's ratio.

Run::

    .venv/bin/python bench/hot_route_cpu.py --db sqlite --blocks 20 --block 25
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

import common
from request_cpu import bench_room, scratch

from cmschat.app import create_app
from cmschat.chat.hot_routes import HotRoute

VARIANTS = ("hot", "declared")


async def main(argv: list[str]) -> dict[str, Any]:
    """Interleaved blocks of both variants; medians and the paired ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--block", type=int, default=25, help="requests per block")
    args = parser.parse_args(argv)
    per: dict[tuple[str, str], list[float]] = {}
    async with scratch(args.db) as (settings, password):
        app = create_app(settings)
        routes = app.router.routes
        hot = next(route for route in routes if isinstance(route, HotRoute))
        async with app.router.lifespan_context(app), bench_room(app, password) as room:
            http, headers, url = room
            for number in range(args.blocks):
                order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    if variant == "hot" and hot not in routes:
                        routes.insert(0, hot)
                    elif variant == "declared" and hot in routes:
                        routes.remove(hot)
                    for action in ("history", "send"):
                        started = time.process_time()
                        for n in range(args.block):
                            if action == "history":
                                response = await http.get(
                                    url, params={"limit": 50}, headers=headers
                                )
                            else:
                                body = {"content": f"m{number}.{n}"}
                                response = await http.post(url, json=body, headers=headers)
                            if response.status_code >= 300:
                                raise RuntimeError(response.text)
                        spent = (time.process_time() - started) / args.block * 1e6
                        per.setdefault((variant, action), []).append(spent)
    result: dict[str, Any] = {
        "db": args.db,
        "source": common.source_state(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for action in ("history", "send"):
        hot_us, declared_us = per[("hot", action)], per[("declared", action)]
        result[f"{action}_hot_cpu_us"] = round(statistics.median(hot_us))
        result[f"{action}_declared_cpu_us"] = round(statistics.median(declared_us))
        ratios = [h / d for h, d in zip(hot_us, declared_us, strict=True)]
        result[f"{action}_paired_ratio"] = round(statistics.median(ratios), 3)
    print(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main(sys.argv[1:])) else 1)
