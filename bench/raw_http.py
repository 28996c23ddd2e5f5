"""A cheap HTTP/1.1 load generator: raw keep-alive GETs over asyncio streams, in processes.

httpx in the bench's one process took a whole core for 288 pages/s (~3.4 ms of CPU per
request: its models, headers, pool and h11), so the server's figure was the client's.
Here a request is a prebuilt bytes line written on a kept connection and a response is
its status line, ``Content-Length`` and body read back, nothing else; and
the connections are spread over ``procs`` processes (each with its own event loop), so
the generator is not one process pinned at 100 %. Each process reports its own CPU over
the measured window, so a run can say what share of the machine the generator took.

Only what cmschat's server answers is handled: ``Content-Length`` bodies (no chunked
encoding), keep-alive. A response the checker refuses is counted as an error by its text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import children

Check = Callable[[int, bytes], "str | None"]


@dataclass(frozen=True)
class Plan:
    """What one generator process does: the same for all but ``index`` and ``connections``."""

    host: str
    port: int
    path: str
    """The page's path, without a query."""
    limit: int
    tokens: Sequence[str]
    first_seq: int
    last_seq: int
    before_share: float
    start: float
    """``time.monotonic()`` of the measured window's start (system-wide on Linux)."""
    end: float
    index: int = 0
    connections: int = 1


@dataclass
class Outcome:
    """What one generator process saw in the measured window."""

    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    """This process's user + system CPU over the measured window."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def page_check(limit: int) -> Check:
    """200 with ``limit`` items: counted by their ``"seq":`` key (a message's text can only
    hold it escaped), without parsing the JSON."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"{status} {body[:120].decode(errors='replace')}"
        if body.count(b'"seq":') != limit:
            return "short page"
        return None

    return check


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("no content-length")
    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
    return status, await reader.readexactly(length)


async def _run(plan: Plan) -> Outcome:
    outcome = Outcome()
    rng = random.Random(3 + plan.index)
    check = page_check(plan.limit)
    cpu_marks: dict[str, float] = {}
    heads = [
        f"Host: {plan.host}:{plan.port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        for token in plan.tokens
    ]

    def request(connection: int) -> bytes:
        query = f"limit={plan.limit}"
        if rng.random() < plan.before_share:
            query += f"&before={rng.randint(plan.first_seq + plan.limit, plan.last_seq + 1)}"
        head = heads[(plan.index + connection) % len(heads)]
        return b"GET %s?%s HTTP/1.1\r\n%b" % (plan.path.encode(), query.encode(), head)

    async def marks() -> None:
        await asyncio.sleep(max(0.0, plan.start - time.monotonic()))
        cpu_marks["start"] = _cpu()
        await asyncio.sleep(max(0.0, plan.end - time.monotonic()))
        cpu_marks["end"] = _cpu()

    async def connection(number: int) -> None:
        reader, writer = await asyncio.open_connection(plan.host, plan.port)
        try:
            while True:
                t0 = time.monotonic()
                if t0 >= plan.end:
                    return
                try:
                    writer.write(request(number))
                    status, body = await _read_response(reader)
                    problem = check(status, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    status, problem = -1, type(exc).__name__
                t1 = time.monotonic()
                if status == -1:
                    writer.close()
                    reader, writer = await asyncio.open_connection(plan.host, plan.port)
                if t0 < plan.start or t1 > plan.end:
                    continue
                outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
                if problem is None:
                    outcome.ok += 1
                    outcome.latencies.append(t1 - t0)
                else:
                    outcome.errors[problem] = outcome.errors.get(problem, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(marks(), *(connection(n) for n in range(plan.connections)))
    outcome.cpu_s = cpu_marks["end"] - cpu_marks["start"]
    return outcome


def run_process(plan: Plan) -> Outcome:
    """One generator process's whole load (a ``ProcessPoolExecutor`` job)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(plan))


async def load(plan: Plan, *, concurrency: int, procs: int) -> tuple[Outcome, list[float]]:
    """``concurrency`` connections over ``procs`` processes: the merged outcome (latencies
    sorted) and each process's CPU seconds in the window."""
    spread = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    plans = [
        Plan(**{**plan.__dict__, "index": i, "connections": n}) for i, n in enumerate(spread) if n
    ]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        len(plans),
        mp_context=context,
        initializer=children.die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        outcomes = await asyncio.gather(
            *(asyncio.wrap_future(pool.submit(run_process, one)) for one in plans)
        )
    merged = Outcome()
    for one in outcomes:
        merged.ok += one.ok
        for key, count in one.statuses.items():
            merged.statuses[key] = merged.statuses.get(key, 0) + count
        for text, count in one.errors.items():
            merged.errors[text] = merged.errors.get(text, 0) + count
        merged.latencies.extend(one.latencies)
        merged.cpu_s += one.cpu_s
    merged.latencies.sort()
    return merged, [one.cpu_s for one in outcomes]


def summary(outcome: Outcome, per_process: list[float], elapsed: float) -> dict[str, Any]:
    """The generator's own CPU share of the window, total and per process."""
    return {
        "load_procs": len(per_process),
        "load_cpu_pct_of_run": 100 * outcome.cpu_s / elapsed,
        "load_cpu_pct_per_proc": [round(100 * s / elapsed, 1) for s in per_process],
        "load_cpu_us_per_request": 1e6 * outcome.cpu_s / outcome.ok if outcome.ok else None,
    }
