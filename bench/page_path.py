"""Instructions (or CPU) per history page on the hot route, sign-in included.

Two stretches of one process as shipped (``create_app``'s context), a room of 120
messages, half of them mentioning the reader:

- ``route``: ``chat.hot_routes.history`` called as the route calls it (the bearer token
  checked, the membership, the page of 50 read and written as JSON bytes), no HTTP;
- ``request``: the same page asked through the in-process HTTP client (the middleware,
  the access log and the client's own share included).

``--instructions``: counted by valgrind's callgrind (every thread: the driver's too),
steady on a shared machine; else CPU time. ``--profile PATH``: a cProfile of the route
stretch split by layer (``split.py``).

Run::

    .venv/bin/python bench/page_path.py --db sqlite --instructions --pages 100
    .venv/bin/python bench/page_path.py --db mariadb --profile /tmp/page
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from functools import partial
from typing import Any

import common
import split
from observability_overhead import Callgrind, figures_of
from request_cpu import bench_room, scratch
from starlette.requests import Request

from cmschat.app import create_app
from cmschat.chat import hot_routes


async def run(args: argparse.Namespace, probe: Callgrind | None) -> dict[str, Any]:
    """Warm up, then count (or time) each stretch."""
    figures: dict[str, Any] = {}
    async with scratch(args.db) as (settings, password):
        app = create_app(settings)
        async with app.router.lifespan_context(app), bench_room(app, password) as (http, h, url):
            for n in range(60):
                await http.post(url, json={"content": f"hello @{common.ADMIN} {n}"}, headers=h)
            context = app.state.context
            room_id = int(url.split("/")[-2])
            scope = {
                "type": "http",
                "method": "GET",
                "path": url,
                "query_string": b"",
                "headers": [(b"authorization", h["Authorization"].encode())],
                "app": app,
            }

            async def route() -> None:
                response = await hot_routes.history(
                    Request(scope), context, room_id, (None, None, 50)
                )
                if response.status_code != 200:
                    raise RuntimeError(bytes(response.body).decode())

            async def request() -> None:
                response = await http.get(url, headers=h)
                if response.status_code != 200:
                    raise RuntimeError(response.text)

            for name, action in (("route", route), ("request", request)):
                for _ in range(5):
                    await action()
                profiler = cProfile.Profile(time.thread_time) if args.profile else None
                if probe is not None:
                    probe.start()
                started = time.process_time()
                if profiler is not None:
                    profiler.enable()
                for _ in range(args.pages):
                    await action()
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(f"{args.profile}.{name}")
                spent = time.process_time() - started
                if probe is not None:
                    probe.stop(name)
                    figures[f"{name}_instructions"] = round(probe.counts[name] / args.pages)
                figures[f"{name}_cpu_us"] = round(spent / args.pages * 1e6, 1)
    return figures


def main(argv: list[str]) -> dict[str, Any]:
    """One measurement, or (``--instructions``) this script again under callgrind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--profile", metavar="PATH")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--dump-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    figures = figures_of(__file__, argv, args.dump_dir, partial(run, args))
    result = {"db": args.db, "pages": args.pages, "load_average": os.getloadavg(), **figures}
    print(json.dumps(result))
    if args.profile:
        for name in ("route", "request"):
            print(f"\ncProfile {name}, self time by layer:")
            for layer, pct in split.cprofile_layers(pstats.Stats(f"{args.profile}.{name}")):
                print(f"  {pct:5.1f}%  {layer}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
