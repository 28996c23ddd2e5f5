"""What metrics and logs cost per request under a real server: instructions of a uvicorn process.

``observability_overhead.py --instructions`` counts an app called in-process through
``httpx.ASGITransport``; its ``floor`` (the in-process client and ASGI plumbing) has to be
taken out by hand to get "the server's part". Here the server is what ``cmschat serve``
runs (``cli_server.uvicorn_config``: uvicorn with its HTTP parser, one process, SQLite),
started under valgrind's callgrind, and a client in this (separate, uncounted) process
sends the requests over TCP. Only the server's instructions are counted, and only while the
measured requests run (``callgrind_control --instr=on/off`` on the server's pid), so the
figures are the whole served request: uvicorn's parsing and writing, the app, the
database driver's thread, and nothing of the client.

Variants as in ``observability_overhead.py`` (the same patches): ``bare`` (no metrics
middleware, no SQL timing, access log off), ``observed`` (as shipped, tracing off, JSON
lines to a sink), ``traced_sql_counted`` (tracing on, spans to an exporter that drops
them, every statement counted on its span rather than spanned: what a machine gets when
statements are quicker than ``TRACE_SQL_MS``) and ``floor`` (the same uvicorn serving an
app that answers at once: uvicorn's own share).

Run::

    .venv/bin/python bench/served_overhead.py --requests 60
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import children
import common
import httpx
import observability_overhead as bench

ACTIONS = common.REQUEST_ACTIONS
VARIANTS = ("bare", "observed", "traced_sql_counted", "floor")
_PREPARING = threading.Lock()
"""Databases are prepared one at a time: two at once in threads of one process hung."""


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(variant: str, data: Path, port: int) -> None:
    """The server child: the variant's app under uvicorn as ``cmschat serve`` runs it."""
    import uvicorn

    from cmschat import app as app_module
    from cmschat.chat.caches import HotCaches
    from cmschat.cli_server import uvicorn_config
    from cmschat.observability.asgi_metrics import MetricsMiddleware

    settings = bench.settings_for(data)
    bench.quiet_logging()
    application: Any
    if variant == "floor":
        application = bench.floor_app
    else:
        if variant.startswith("traced"):
            from cmschat.observability import tracing

            tracing.otlp_processor = bench.DropExporter.processor  # type: ignore[assignment]
            os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
            settings = settings.model_copy(
                update={
                    "metrics": settings.metrics.model_copy(
                        update={"trace_sql_ms": bench.SQL_SPAN_MS[variant]}
                    )
                }
            )
        # The same patches as the in-process bench (observability_overhead.measure).
        app_module.start_jobs = lambda *_a, **_k: []  # type: ignore[assignment]
        app_module.HotCaches = functools.partial(HotCaches, now=bench._frozen_clock)  # type: ignore[misc]
        if variant == "bare":
            app_module.instrument_engine = lambda *_a, **_k: None  # type: ignore[assignment]
            logging.getLogger().setLevel(logging.WARNING)
        application = app_module.create_app(settings)
        if variant == "bare":
            application.user_middleware = [
                m for m in application.user_middleware if m.cls is not MetricsMiddleware
            ]
    config = uvicorn_config(application, settings, host="127.0.0.1", port=port)
    uvicorn.Server(config).run()


def control(pid: int, *args: str) -> None:
    """``callgrind_control`` on the server."""
    tool = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run(  # noqa: S603
        [tool, *args, str(pid)], check=True, capture_output=True, preexec_fn=children.with_parent()
    )


def counted(pid: int, dumps: Path) -> int:
    """Stop counting, dump, and the instructions counted since the last start."""
    control(pid, "--instr=off")
    control(pid, "--dump")
    newest = max(dumps.glob(f"cg.{pid}.out.*"), key=lambda f: f.stat().st_mtime_ns)
    totals = next(line for line in newest.read_text().splitlines() if line.startswith("totals:"))
    newest.unlink()
    return int(totals.split()[1])


def wait_until_up(http: httpx.Client, process: subprocess.Popen[bytes]) -> None:
    """Until ``/healthz`` answers (valgrind takes a minute or two to start Python)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server ended: {process.stderr.read()[-3000:]!r}")  # type: ignore[union-attr]
        try:
            http.get("/healthz", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(1)
    raise SystemExit("the server did not come up")


def one(http: httpx.Client, action: str, url: str, headers: dict[str, str], n: int) -> None:
    """One request of ``action`` (as common.request_action, synchronously)."""
    if action == "healthz":
        response = http.get("/healthz")
    elif action == "history":
        response = http.get(url, params={"limit": 50}, headers=headers)
    else:
        response = http.post(url, json={"content": f"m{n}"}, headers=headers)
    if response.status_code >= 300:
        raise RuntimeError(response.text)


def measure(variant: str, requests: int) -> dict[str, int]:
    """Instructions per request of each action, the server of ``variant`` counted."""
    with tempfile.TemporaryDirectory() as scratch:
        data, dumps = Path(scratch) / "data", Path(scratch) / "dumps"
        data.mkdir()
        dumps.mkdir()
        settings = bench.settings_for(data)
        with _PREPARING:
            asyncio.run(bench.prepare(settings))
        port = free_port()
        process = subprocess.Popen(  # noqa: S603 - our own script under a fixed tool
            [
                *common.under_callgrind(dumps, sys.executable, __file__),
                "--serve",
                variant,
                "--data",
                str(data),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=children.with_parent(),
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                wait_until_up(http, process)
                url, headers = "/api/v1/rooms/1/messages", {"Authorization": "Bearer floor"}
                if variant != "floor":
                    token = http.post(
                        "/api/v1/auth/login",
                        json={"username": "bench", "password": bench.PASSWORD},
                    ).json()["access_token"]
                    headers = {"Authorization": f"Bearer {token}"}
                    room = http.post(
                        "/api/v1/rooms",
                        json={"kind": "group", "name": variant, "member_ids": []},
                        headers=headers,
                    ).json()["id"]
                    url = f"/api/v1/rooms/{room}/messages"
                    for n in range(60):
                        http.post(url, json={"content": f"seed {n}"}, headers=headers)
                figures = {}
                for action in ACTIONS:
                    for n in range(30):  # warm: imports, caches, the connection
                        one(http, action, url, headers, n)
                    control(process.pid, "--zero")
                    control(process.pid, "--instr=on")
                    control(process.pid, "--zero")
                    for n in range(requests):
                        one(http, action, url, headers, 100 + n)
                    figures[action] = round(counted(process.pid, dumps) / requests)
                return figures
        finally:
            process.terminate()
            process.wait(timeout=300)


def main() -> None:
    """Count the variants (each server in turn, or ``--jobs`` at once) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.data, args.port)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        counts = dict(
            zip(VARIANTS, pool.map(lambda v: measure(v, args.requests), VARIANTS), strict=True)
        )
    result: dict[str, Any] = {"instructions_per_request": counts}
    for variant in VARIANTS[1:-1]:
        result[variant] = {}
        for action in ACTIONS:
            bare, value, floor = (counts[v][action] for v in ("bare", variant, "floor"))
            result[variant][action] = {
                "added": value - bare,
                "overhead_pct": round((value / bare - 1) * 100, 1),
                # Against the app's share alone: uvicorn's own (``floor``) taken out.
                "overhead_of_app_pct": round((value - bare) / (bare - floor) * 100, 1),
            }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
