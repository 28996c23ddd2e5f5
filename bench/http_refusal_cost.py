"""What refusing a posted send costs while the process is full: at the app's door
(``api/busy.py``) against through the whole stack (middleware, the hot route's admission).

In one process, no server and no socket: the app is called as uvicorn calls it, with the
admission held full, ``--requests`` posts per round, rounds alternating between the two
paths (paired, so both see the same machine). The figure is this process's CPU time
(``time.process_time``) per refused request, median of the rounds; with ``--log-info``
the access log is on (to /dev/null), as in production; with ``--origin`` the posts carry
that ``Origin`` and ``CMSCHAT_CORS_ORIGINS`` allows it (a browser on another site: both
paths add the CORS headers).

    .venv/bin/python bench/http_refusal_cost.py --rounds 7 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import children

ROOT = Path(__file__).resolve().parent.parent


ORIGIN: list[tuple[bytes, bytes]] = []
"""The ``Origin`` header of every post, if ``--origin`` is given."""


def scope() -> dict[str, Any]:
    """A post as uvicorn's h11 protocol hands it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/api/v1/rooms/7/messages",
        "raw_path": b"/api/v1/rooms/7/messages",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer x"),
            (b"content-type", b"application/json"),
            (b"content-length", b"17"),
            *ORIGIN,
        ],
        "state": {},
    }


async def round_of(app: Any, requests: int) -> float:
    """CPU seconds per refused request, over ``requests`` of them."""
    body = {"type": "http.request", "body": b'{"content": "hi"}', "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(requests):
        await app(scope(), receive, send)
    spent = time.process_time() - started
    if set(statuses) != {503}:
        raise SystemExit(f"expected only 503s, got {set(statuses)}")
    return spent / requests


def prepare(args: argparse.Namespace) -> Any:
    """Settings for a migrated scratch SQLite database; logging as asked."""
    from cmschat.settings import Settings

    directory = tempfile.mkdtemp()
    url = f"sqlite+aiosqlite:///{directory}/bench.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMSCHAT_")}
    migrate = [str(ROOT / ".venv" / "bin" / "cmschat"), "migrate"]
    subprocess.run(  # noqa: S603 - our own entry point
        migrate,
        env={**env, "CMSCHAT_DATABASE_URL": url},
        check=True,
        cwd=directory,
        preexec_fn=children.with_parent(),
    )
    settings = Settings(database_url=url, data_dir=Path(directory))
    if args.origin:
        settings.cors_origins = [args.origin]
        ORIGIN.append((b"origin", args.origin.encode()))
    if args.log_info:
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=logging.WARNING, force=True)
    return settings


async def main(args: argparse.Namespace, settings: Any) -> None:
    from cmschat.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context = app.state.context
        context.admission.in_flight = context.admission.limit
        door = app.busy  # type: ignore[attr-defined]
        results: dict[str, list[float]] = {"door": [], "stack": []}
        await round_of(app, 200)  # warm both paths
        app.busy = None  # type: ignore[attr-defined]
        await round_of(app, 200)
        for _ in range(args.rounds):
            app.busy = door  # type: ignore[attr-defined]
            results["door"].append(await round_of(app, args.requests))
            app.busy = None  # type: ignore[attr-defined]
            results["stack"].append(await round_of(app, args.requests))
        app.busy = door  # type: ignore[attr-defined]
        context.admission.in_flight = 0
    door_us = statistics.median(results["door"]) * 1e6
    stack_us = statistics.median(results["stack"]) * 1e6
    print(
        f"refused post, CPU per request (median of {args.rounds} rounds of {args.requests}, "
        f"access log {'on' if args.log_info else 'off'}, origin {args.origin}): "
        f"through the stack {stack_us:.1f} us, "
        f"at the door {door_us:.1f} us, ratio {stack_us / door_us:.1f}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--log-info", action="store_true", help="access log on, to /dev/null")
    parser.add_argument("--origin", help="an allowed origin every post carries")
    sys.path.insert(0, str(ROOT / "src"))
    arguments = parser.parse_args()
    asyncio.run(main(arguments, prepare(arguments)))
