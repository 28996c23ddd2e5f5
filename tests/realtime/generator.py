"""The overload test's side of its load generator: worker processes, driven phase by phase.

Each worker (``load_worker.py``) owns a share of the members; a command goes to all of them
and the test waits for every answer. Their reports are merged into one ``Report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import children

ROOT = Path(__file__).resolve().parents[2]
ANSWER_WITHIN = 120.0
"""A worker answers each command within this (the longest phase plus its answers)."""


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of process ``pid`` to ``cores`` (threads it starts later inherit)."""
    for task in [pid, *map(int, os.listdir(f"/proc/{pid}/task"))]:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(task, cores)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Report:
    """What every member and sender saw, over all workers."""

    ws_sent: int = 0
    ws_busy: int = 0
    ws_bad_busy: list[Any] = field(default_factory=list)
    ws_other_errors: list[Any] = field(default_factory=list)
    http_sent: int = 0
    http_statuses: Counter[int] = field(default_factory=Counter)
    http_bad: list[str] = field(default_factory=list)
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    deliveries: list[tuple[float, float]] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)

    def add(self, part: dict[str, Any]) -> None:
        """Merge one worker's report."""
        self.ws_sent += part["ws_sent"]
        self.ws_busy += part["ws_busy"]
        self.ws_bad_busy += part["ws_bad_busy"]
        self.ws_other_errors += part["ws_other_errors"]
        self.http_sent += part["http_sent"]
        self.http_statuses.update({int(k): v for k, v in part["http_statuses"].items()})
        self.http_bad += part["http_bad"]
        self.deliveries += [(sent, latency) for sent, latency in part["deliveries"]]
        self.members += part["members"]


class Generator:
    """The running workers; ``send`` a command to all and get every answer."""

    def __init__(self, workers: list[asyncio.subprocess.Process]) -> None:
        self.workers = workers
        self.cpu = 0.0
        """The workers' CPU seconds as of their last answers."""

    async def send(self, cmd: str, **args: Any) -> list[dict[str, Any]]:
        """The same command to every worker; their answers, in order."""
        return await self.each([{"cmd": cmd, **args}] * len(self.workers))

    async def each(self, orders: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One command per worker; their answers, in order."""
        for worker, order in zip(self.workers, orders, strict=True):
            assert worker.stdin is not None
            worker.stdin.write(orjson.dumps(order, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        async with asyncio.timeout(ANSWER_WITHIN):
            answers = await asyncio.gather(*(self._answer(w) for w in self.workers))
        self.cpu = sum(answer["cpu"] for answer in answers)
        return answers

    @staticmethod
    async def _answer(worker: asyncio.subprocess.Process) -> dict[str, Any]:
        assert worker.stdout is not None
        line = await worker.stdout.readline()
        assert line, f"load worker {worker.pid} exited with {await worker.wait()}"
        answer: dict[str, Any] = orjson.loads(line)
        return answer


@contextlib.asynccontextmanager
async def generator(count: int, cores: set[int], logs: Path) -> AsyncIterator[Generator]:
    """``count`` worker processes pinned to ``cores``; killed if still running at the end."""
    env = {**os.environ, "LOAD_WORKER_CORES": ",".join(map(str, sorted(cores)))}
    workers = []
    try:
        for index in range(count):
            with (logs / f"load_worker{index}.stderr").open("wb") as stderr:
                workers.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "tests.realtime.load_worker",
                        cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE, stderr=stderr, limit=1 << 30,
                        # A session, so a scheduling group (autogroup), of its own: in
                        # the server's, a generator that has work on its core takes the
                        # group's CPU weight off the server's core.
                        start_new_session=True, preexec_fn=children.with_parent(),
                    )
                )  # fmt: skip
        yield Generator(workers)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()


class Progress:
    """Time since the test began, and the CPU shares of the server and of the generator."""

    def __init__(self, pid: int, load: Generator) -> None:
        self.pid = pid
        self.load = load
        self.shares: dict[str, tuple[float, float]] = {}
        self.last = (time.perf_counter(), cpu_seconds(pid), load.cpu)
        self.began = self.last[0]

    def say(self, what: str) -> None:
        """Print what happened, with the CPU shares since the last step (``-s`` shows it)."""
        now, server, load = time.perf_counter(), cpu_seconds(self.pid), self.load.cpu
        took = now - self.last[0]
        self.shares[what] = ((server - self.last[1]) / took, (load - self.last[2]) / took)
        print(
            f"[{now - self.began:6.1f} s] {what} (server {self.shares[what][0]:.0%} of a core, "
            f"load generator {self.shares[what][1]:.0%}, load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        self.last = (now, server, load)
