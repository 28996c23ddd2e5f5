"""CPU per request in process: ``/healthz``, a history page (50 messages) and a send.

One app (as shipped: metrics on, JSON access log to a sink, tracing off) served through
``httpx.ASGITransport``, one request at a time, so the figure is CPU per request
(``time.process_time``: the in-process client's own share included, no network, no
other clients). On a shared machine CPU time is steadier than wall time; compare two
commits by running this from each worktree back to back.

``--profile PATH``: also a cProfile of the history and send loops (stats written to
PATH.history / PATH.send) with self time grouped by layer (``split.py``).

Run::

    .venv/bin/python bench/request_cpu.py --db sqlite --requests 500
    .venv/bin/python bench/request_cpu.py --db mariadb --requests 500 --profile /tmp/cpu
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import pstats
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import common
import httpx
import split

from cmschat.app import create_app
from cmschat.observability.logging import LogFormat, configure_logging
from cmschat.settings import AuthSettings, ChatSettings, Environment, RetentionSettings, Settings

ACTIONS = common.REQUEST_ACTIONS


class Sink:
    """A log stream that keeps nothing (the access log's formatting cost stays)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.asynccontextmanager
async def bench_room(app: Any, password: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any, str]]:
    """An in-process client signed in as the bench admin, its headers, and the messages
    URL of a room of 60 messages."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        login = {"username": common.ADMIN, "password": password}
        token = (await http.post("/api/v1/auth/login", json=login)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        room = (
            await http.post(
                "/api/v1/rooms",
                json={"kind": "group", "name": "cpu", "member_ids": []},
                headers=headers,
            )
        ).json()["id"]
        url = f"/api/v1/rooms/{room}/messages"
        for n in range(60):
            await http.post(url, json={"content": f"seed {n}"}, headers=headers)
        yield http, headers, url


async def one_round(
    app: Any, password: str, requests: int, profile: str | None
) -> dict[str, float]:
    """CPU microseconds per request of each action."""
    async with bench_room(app, password) as (http, headers, url):
        results = {}
        for action in ACTIONS:
            # Timed by this thread's CPU: waits are not work, and aiosqlite's thread is apart.
            profiler = (
                cProfile.Profile(time.thread_time) if profile and action != "healthz" else None
            )
            started, started_thread = time.process_time(), time.thread_time()
            if profiler is not None:
                profiler.enable()
            for n in range(requests):
                await common.request_action(http, action, url, headers, n)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(f"{profile}.{action}")
            spent = time.process_time() - started
            results[action] = spent / requests * 1e6
            results[f"{action}_other_threads_pct"] = (
                100 * (spent - (time.thread_time() - started_thread)) / spent
            )
        return results


@contextlib.asynccontextmanager
async def scratch(db: str) -> AsyncIterator[tuple[Settings, str]]:
    """Settings of a scratch database with the bench admin (and its password); JSON
    logs to a sink."""
    backend = common.Backend(db=db)
    await backend.create()
    try:
        password = common.bench_password()
        backend.create_admin(password)
        configure_logging(level="INFO", log_format=LogFormat.json)
        logging.getLogger().handlers[0].stream = Sink()  # type: ignore[attr-defined]
        yield (
            Settings(
                environment=Environment.test,
                database_url=backend.database_url,
                data_dir=backend.workdir / "var",
                secret_key=backend.secret_key,
                auth=AuthSettings(bcrypt_rounds=4),
                retention=RetentionSettings(run_daily=False),
                chat=ChatSettings(send_rate=0),
                _env_file=None,  # type: ignore[call-arg]
            ),
            password,
        )
    finally:
        await backend.drop()


async def main(argv: list[str]) -> dict[str, Any]:
    """Rounds of every action; medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", metavar="PATH", help="cProfile an extra round first")
    args = parser.parse_args(argv)
    async with scratch(args.db) as (settings, password):
        rounds: dict[str, list[float]] = {}
        # The profiled round (an extra one first) is not counted: cProfile slows it.
        for number in range(-1 if args.profile else 0, args.rounds):
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                profile = args.profile if number < 0 else None
                figures = await one_round(app, password, args.requests, profile)
            if number >= 0:
                for action, micros in figures.items():
                    rounds.setdefault(action, []).append(micros)
    result = {
        "db": args.db,
        "source": common.source_state(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **{
            a if a.endswith("_pct") else f"{a}_cpu_us": round(statistics.median(v))
            for a, v in rounds.items()
        },
        "rounds": {a: [round(x) for x in v] for a, v in rounds.items()},
    }
    print(result)
    if args.profile:
        for action in ("history", "send"):
            stats = pstats.Stats(f"{args.profile}.{action}")
            print(f"\ncProfile {action}, self time by layer:")
            for layer, pct in split.cprofile_layers(stats):
                print(f"  {pct:5.1f}%  {layer}")
    return result


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main(sys.argv[1:])) else 1)
