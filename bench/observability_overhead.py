"""What metrics, logs and tracing cost per request: CPU time of the history page and of a send.

In-process (one app, ``httpx.ASGITransport``, SQLite in a temporary directory), so the
figure is the server's own CPU per request with no network and no load generator in the
way. Variants, measured in interleaved rounds so that a busy machine hurts them alike:

* ``bare``: no metrics middleware, no SQL timing hooks, access log off (level WARNING);
* ``observed``: what ships: metrics (HTTP, SQL events), JSON access log to /dev/null,
  tracing off;
* ``traced``: the same plus OpenTelemetry on (spans batched to an exporter that drops them),
  SQL statements spanned from ``CMSCHAT_METRICS__TRACE_SQL_MS`` (1 ms) up, quicker ones counted;
* ``traced_every_sql``: tracing with a span for every SQL statement (``TRACE_SQL_MS=0``);
* ``traced_sql_counted``: tracing with no statement spanned, all counted on their span (what
  a quiet machine gets when every statement is quicker than the threshold; under callgrind,
  which slows wall time some fifty-fold, ``traced`` spans almost every statement instead).

Traced variants also report the spans they made per request (``spans_per_request``).

Actions: ``healthz`` (almost no work of its own: the difference is the absolute cost of
the instrumentation per request), the newest history page (50 messages) and a send.

Reported per variant and action: median CPU microseconds per request over the rounds, and
the overhead against ``bare`` (the medians' ratio, as before, and the median of each round's
own ratio, ``paired_overhead_pct``, steadier on a loaded machine).
Goal (issue 12): observed < 5 %, traced < 15 %.

Run::

    .venv/bin/python bench/observability_overhead.py --requests 300 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, cast

import children
import common
import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from cmschat import app as app_module
from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.chat.caches import HotCaches
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.observability import tracing
from cmschat.observability.asgi_metrics import MetricsMiddleware
from cmschat.observability.logging import configure_logging
from cmschat.settings import (
    AuthSettings,
    ChatSettings,
    Environment,
    LogFormat,
    RetentionSettings,
    Settings,
)

VARIANTS = ("bare", "observed", "traced", "traced_every_sql", "traced_sql_counted")
ACTIONS = common.REQUEST_ACTIONS
"""``healthz`` does almost nothing: its difference is the absolute cost per request."""
SQL_SPAN_MS = {"traced_every_sql": 0.0, "traced_sql_counted": 1e9}
"""The SQL span threshold of the variants that do not use the shipped one (1 ms)."""
PASSWORD = "Overhead-Measure-9876"  # noqa: S105 - a scratch account


def _frozen_clock() -> float:
    """The caches' clock while counting: never moves, so nothing expires by time."""
    return 0.0


class Callgrind:
    """Counts the instructions of chosen stretches of this process when it runs under
    ``valgrind --tool=callgrind --instr-atstart=no``: steady on a loaded machine, where CPU
    time is not (every thread of the process is counted: the driver's too).
    """

    def __init__(self, dump_dir: Path, *, keep: bool = False) -> None:
        self.dump_dir = dump_dir
        self.keep = keep
        self.pid = str(os.getpid())
        self.counts: dict[str, int] = {}
        self.tool = shutil.which("callgrind_control") or "callgrind_control"

    def _control(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - a fixed tool, our own pid
            [self.tool, *args, self.pid],
            check=True,
            capture_output=True,
            preexec_fn=children.with_parent(),
        )

    def start(self) -> None:
        """Count from here."""
        self._control("--zero")
        self._control("--instr=on")
        self._control("--zero")

    def stop(self, name: str) -> None:
        """Stop counting, dump, and keep the stretch's total under ``name``."""
        self._control("--instr=off")
        self._control("--dump")
        newest = max(self.dump_dir.glob(f"cg.{self.pid}.out.*"), key=lambda f: f.stat().st_mtime_ns)
        totals = next(
            line for line in newest.read_text().splitlines() if line.startswith("totals:")
        )
        self.counts[name] = int(totals.split()[1])
        if self.keep:  # for callgrind_annotate --inclusive=yes
            newest.rename(self.dump_dir / f"cg.{name}.out")
        else:
            newest.unlink()


def figures_of(
    script: str,
    argv: list[str],
    dump_dir: str | None,
    count: Callable[[Callgrind | None], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """``--instructions`` in a bench: ``script`` run again under callgrind (``--dump-dir``
    added) and the figures it prints last; in that child (``dump_dir`` set), ``count`` with
    a probe; otherwise ``count`` without one."""
    if dump_dir is not None:
        return asyncio.run(count(Callgrind(Path(dump_dir))))
    if "--instructions" not in argv:
        return asyncio.run(count(None))
    with tempfile.TemporaryDirectory() as dumps:
        child = subprocess.run(  # noqa: S603 - our own script under a fixed tool
            common.under_callgrind(dumps, sys.executable, script, *argv, "--dump-dir", dumps),
            check=True,
            capture_output=True,
            text=True,
            preexec_fn=children.with_parent(),
        )
    return cast(dict[str, Any], json.loads(child.stdout.strip().splitlines()[-1]))


class DropExporter(SpanExporter):
    """Accepts spans and throws them away (counted): the SDK's cost without a collector's."""

    spans = 0
    processors: list[BatchSpanProcessor] = []  # noqa: RUF012 - the bench's one app at a time

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Drop."""
        DropExporter.spans += len(spans)
        return SpanExportResult.SUCCESS

    @classmethod
    def processor(cls) -> BatchSpanProcessor:
        """A batching processor into a dropping exporter, kept to flush between actions."""
        processor = BatchSpanProcessor(cls())
        cls.processors[:] = [processor]
        return processor

    @classmethod
    def exported(cls) -> int:
        """Spans made so far (flushed first)."""
        for processor in cls.processors:
            processor.force_flush()
        return cls.spans


class Sink:
    """A stream that formats went to and nothing keeps (the cost is in the formatting)."""

    def write(self, text: str) -> int:
        """Discard."""
        return len(text)

    def flush(self) -> None:
        """Nothing to flush."""


def settings_for(directory: Path) -> Settings:
    """A scratch SQLite deployment."""
    return Settings(
        environment=Environment.test,
        data_dir=directory,
        auth=AuthSettings(bcrypt_rounds=4),
        retention=RetentionSettings(run_daily=False),
        chat=ChatSettings(send_rate=0),  # the bench sends as fast as it can
        _env_file=None,  # type: ignore[call-arg]
    )


async def prepare(settings: Settings) -> None:
    """Migrate and create the bench user."""
    from cmschat.audit.service import audited
    from cmschat.clock import SystemClock
    from cmschat.db.migrate import run_migrations
    from cmschat.db.session import Database, create_engine

    engine = create_engine(settings.database_url)
    await run_migrations(engine)
    db = audited(Database(engine, SystemClock()))
    async with db.unit_of_work(SYSTEM_SETUP) as session:
        await accounts.create_user(
            session,
            username="bench",
            password=PASSWORD,
            role=Role.member,
            display_name="Bench",
            must_change_password=False,
            bcrypt_rounds=4,
            clock=db.clock,
        )
    await engine.dispose()


async def time_actions(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    requests: int,
    probe: Callgrind | None,
    variant: str,
) -> dict[str, float]:
    """CPU microseconds per request of each action; counted by ``probe`` when given (and,
    then, the spans made per request)."""
    results = {}
    for action in ACTIONS:
        spans_before = DropExporter.exported()
        if probe:
            probe.start()
        started = time.process_time()
        for n in range(requests):
            await common.request_action(http, action, url, headers, n)
        results[action] = (time.process_time() - started) / requests * 1e6
        if probe:
            probe.stop(f"{variant}.{action}")
            probe.counts[f"{variant}.{action}.spans"] = DropExporter.exported() - spans_before
    return results


async def measure(
    variant: str, settings: Settings, requests: int, probe: Callgrind | None = None
) -> dict[str, float]:
    """CPU microseconds per history page and per send, for one variant.

    With ``probe``, callgrind counts instructions only while each action's requests run.
    """
    original_hook = app_module.instrument_engine
    original_processor = tracing.otlp_processor
    original_jobs = app_module.start_jobs
    original_caches = app_module.HotCaches
    # No background loops: the session check ticks every second, so under valgrind the
    # instructions counted grew with the wall time the requests took (the machine's load).
    app_module.start_jobs = lambda *_a, **_k: []  # type: ignore[assignment]
    # Nor time-based cache expiry: the hot caches' entries live 5 s, and under valgrind
    # (≈50x slower) whether a request found them depended on how fast the machine ran,
    # which moved the bare counts by ±3 points between runs. Invalidation by events stays.
    app_module.HotCaches = functools.partial(HotCaches, now=_frozen_clock)  # type: ignore[misc]
    if variant == "bare":
        app_module.instrument_engine = lambda *_a, **_k: None  # type: ignore[assignment]
        logging.getLogger().setLevel(logging.WARNING)
    else:
        logging.getLogger().setLevel(logging.INFO)
    if variant in SQL_SPAN_MS:
        settings = settings.model_copy(
            update={
                "metrics": settings.metrics.model_copy(
                    update={"trace_sql_ms": SQL_SPAN_MS[variant]}
                )
            }
        )
    if variant.startswith("traced"):
        tracing.otlp_processor = DropExporter.processor
        import os

        os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
    try:
        application = app_module.create_app(settings)
        if variant == "bare":
            application.user_middleware = [
                m for m in application.user_middleware if m.cls is not MetricsMiddleware
            ]
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                token = (
                    await http.post(
                        "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
                    )
                ).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                room = (
                    await http.post(
                        "/api/v1/rooms",
                        json={"kind": "group", "name": variant, "member_ids": []},
                        headers=headers,
                    )
                ).json()["id"]
                url = f"/api/v1/rooms/{room}/messages"
                for n in range(60):
                    await http.post(url, json={"content": f"seed {n}"}, headers=headers)
                return await time_actions(http, url, headers, requests, probe, variant)
    finally:
        app_module.instrument_engine = original_hook
        app_module.start_jobs = original_jobs
        app_module.HotCaches = original_caches  # type: ignore[misc]
        tracing.otlp_processor = original_processor
        DropExporter.processors.clear()
        import os

        os.environ.pop("OTEL_TRACES_EXPORTER", None)


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request at once: what the in-process client itself costs."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def measure_floor(requests: int, probe: Callgrind | None = None) -> dict[str, float]:
    """The same requests as ``measure`` against ``floor_app``."""
    transport = httpx.ASGITransport(app=floor_app)
    headers = {"Authorization": "Bearer floor"}
    url = "/api/v1/rooms/1/messages"
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        return await time_actions(http, url, headers, requests, probe, "floor")


def quiet_logging() -> None:
    """JSON logs formatted to a sink; the bench client's own lines off."""
    configure_logging(level="INFO", log_format=LogFormat.json)
    logging.getLogger().handlers[0].stream = Sink()  # type: ignore[attr-defined]
    # The bench's own HTTP client logs each request at INFO: not the server's cost.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def count_one_variant(
    variant: str, requests: int, dump_dir: Path, *, keep: bool = False
) -> None:
    """Under callgrind: one variant, warmed up uncounted, then each action counted."""
    probe = Callgrind(dump_dir, keep=keep)
    if variant == "floor":
        await measure_floor(30)
        await measure_floor(requests, probe)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            settings = settings_for(Path(scratch))
            await prepare(settings)
            quiet_logging()
            await measure(variant, settings, 30)
            await measure(variant, settings, requests, probe)
    print(json.dumps(probe.counts))


def count_instructions(
    requests: int,
    variants: Sequence[str] = VARIANTS,
    *,
    profiles: Path | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Each variant in its own process under callgrind; instructions per request.

    ``bare`` and ``floor`` are always counted (the others are read against them); with
    ``profiles`` each action's callgrind output is kept there (``cg.<variant>.<action>.out``)
    for ``callgrind_annotate --inclusive=yes``; ``jobs`` children run at once.
    """
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
    chosen = ["bare", *(v for v in variants if v != "bare"), "floor"]
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        dumps = profiles or Path(scratch)
        dumps.mkdir(parents=True, exist_ok=True)

        def child(variant: str) -> subprocess.Popen[str]:
            return subprocess.Popen(  # noqa: S603 - our own script under a fixed tool
                [
                    valgrind,
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={dumps}/cg.%p.out",
                    sys.executable,
                    __file__,
                    "--count-variant",
                    variant,
                    "--requests",
                    str(requests),
                    "--dump-dir",
                    str(dumps),
                    *(["--keep-profiles"] if profiles else []),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=children.with_parent(),
            )

        for start in range(0, len(chosen), jobs):
            running = [child(variant) for variant in chosen[start : start + jobs]]
            for process in running:
                out, err = process.communicate()
                if process.returncode:
                    raise SystemExit(f"a counted child failed:\n{err[-4000:]}")
                counts.update(json.loads(out.strip().splitlines()[-1]))
    result: dict[str, Any] = {}
    for variant in chosen[:-1]:
        result[variant] = {}
        for action in ACTIONS:
            value = counts[f"{variant}.{action}"] / requests
            bare = counts[f"bare.{action}"] / requests
            floor = counts[f"floor.{action}"] / requests
            result[variant][action] = {
                "instructions_per_request": round(value),
                "overhead_pct": round((value / bare - 1) * 100, 1),
                # Against the server's own share: the in-process client's cost taken out.
                "overhead_of_server_pct": round((value - bare) / (bare - floor) * 100, 1),
            }
            if variant.startswith("traced"):
                spans = counts[f"{variant}.{action}.spans"] / requests
                result[variant][action]["spans_per_request"] = round(spans, 2)
    result["floor"] = {
        action: {"instructions_per_request": round(counts[f"floor.{action}"] / requests)}
        for action in ACTIONS
    }
    return result


async def compare_cpu_time(requests: int, rounds: int) -> dict[str, Any]:
    """Interleaved rounds of every variant; medians and overheads of CPU time."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = settings_for(Path(scratch))
        await prepare(settings)
        quiet_logging()
        samples: dict[str, dict[str, list[float]]] = {
            v: {action: [] for action in ACTIONS} for v in VARIANTS
        }
        await measure("observed", settings, 30)  # warm-up: imports, caches
        for round_number in range(rounds):
            shift = round_number % len(VARIANTS)
            order = VARIANTS[shift:] + VARIANTS[:shift]
            for variant in order:
                for action, value in (await measure(variant, settings, requests)).items():
                    samples[variant][action].append(value)
    result: dict[str, Any] = {}
    for variant in VARIANTS:
        result[variant] = {}
        for action in ACTIONS:
            median = statistics.median(samples[variant][action])
            bare = statistics.median(samples["bare"][action])
            # Each round's variant against the same round's bare, then the median: on a
            # shared machine the load drifts between rounds more than within one.
            paired = statistics.median(
                value / base - 1
                for value, base in zip(
                    samples[variant][action], samples["bare"][action], strict=True
                )
            )
            result[variant][action] = {
                "cpu_us_per_request": round(median, 1),
                "overhead_pct": round((median / bare - 1) * 100, 1),
                "added_us": round(median - bare, 1),
                "paired_overhead_pct": round(paired * 100, 1),
            }
    return result


async def main(argv: list[str]) -> dict[str, Any]:
    """CPU time in interleaved rounds, or instructions under callgrind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under valgrind's callgrind instead of CPU time",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="with --instructions: the variants to count, comma-separated (bare always)",
    )
    parser.add_argument(
        "--profiles",
        type=Path,
        help="with --instructions: keep each action's callgrind output in this directory",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="with --instructions: children run at once"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--count-variant", help=argparse.SUPPRESS)
    parser.add_argument("--dump-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep-profiles", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count_variant:
        await count_one_variant(
            args.count_variant, args.requests, args.dump_dir, keep=args.keep_profiles
        )
        return {}
    if args.instructions:
        variants = [v for v in args.variants.split(",") if v]
        unknown = set(variants) - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
        result = count_instructions(
            args.requests, variants, profiles=args.profiles, jobs=max(1, args.jobs)
        )
    else:
        result = await compare_cpu_time(args.requests, args.rounds)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
