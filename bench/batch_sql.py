"""CPU per send in a group-commit batch and per history page, below HTTP.

The service calls themselves, in one process as shipped (``create_app``'s context: its
database, caches, group commit and broker): a batch is ``--batch`` sends queued at once
into four rooms (one transaction), a page is ``reads.history_json`` (50 messages, its
JSON bytes) on a pooled read-only connection, as the hot route reads it. No HTTP, so the
figure is the SQL and cmschat's own Python around it.

``--instructions``: counted by valgrind's callgrind (every thread of the process, the
driver's too), steady on a shared machine; else CPU time (``time.process_time``).
``--profile PATH``: a cProfile (this thread's CPU) split by layer (``split.py``).

Run::

    .venv/bin/python bench/batch_sql.py --db sqlite --instructions
    .venv/bin/python bench/batch_sql.py --db mariadb --profile /tmp/batch
"""

from __future__ import annotations

import argparse
import asyncio
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
from sqlalchemy import select

from cmschat.accounts.models import User
from cmschat.app import create_app
from cmschat.chat.messages import reads
from cmschat.chat.schemas import MessageCreate
from cmschat.db.readers import reading

ROOMS = 4


async def run(args: argparse.Namespace, probe: Callgrind | None) -> dict[str, Any]:
    """Warm up, then time (or count) the batches and the pages."""
    figures: dict[str, Any] = {}
    async with scratch(args.db) as (settings, password):
        app = create_app(settings)
        async with app.router.lifespan_context(app), bench_room(app, password) as (http, h, url):
            rooms = [int(url.split("/")[-2])]
            for n in range(ROOMS - 1):
                body = {"kind": "group", "name": f"batch{n}", "member_ids": []}
                rooms.append((await http.post("/api/v1/rooms", json=body, headers=h)).json()["id"])
            context = app.state.context
            async with context.db.unit_of_work(read_only=True) as session:
                user = (await session.scalars(select(User).where(User.id == 1))).one()
            serial = iter(range(10**9))

            async def batch() -> None:
                sends = [
                    context.sends.send(
                        user=user,
                        room_id=rooms[n % ROOMS],
                        draft=MessageCreate(
                            content=f"hello @{common.ADMIN} {n}", client_id=f"c{next(serial)}"
                        ),
                    )
                    for n in range(args.batch)
                ]
                await asyncio.gather(*sends)

            async def page() -> None:
                async with reading(context.db.reader) as driver:
                    await reads.history_json(
                        driver,
                        user_id=user.id,
                        room_id=rooms[0],
                        before=None,
                        after=None,
                        limit=50,
                        caches=context.caches,
                    )

            for name, action, count in (
                ("send", batch, args.batches),
                ("history", page, args.pages),
            ):
                for _ in range(5):
                    await action()
                profiler = cProfile.Profile(time.thread_time) if args.profile else None
                if probe is not None:
                    probe.start()
                started = time.process_time()
                if profiler is not None:
                    profiler.enable()
                for _ in range(count):
                    await action()
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(f"{args.profile}.{name}")
                spent = time.process_time() - started
                per = count * (args.batch if name == "send" else 1)
                if probe is not None:
                    probe.stop(name)
                    figures[f"{name}_instructions"] = round(probe.counts[name] / per)
                figures[f"{name}_cpu_us"] = round(spent / per * 1e6, 1)
    return figures


def main(argv: list[str]) -> dict[str, Any]:
    """One measurement, or (``--instructions``) this script again under callgrind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--batch", type=int, default=64, help="sends per batch")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--profile", metavar="PATH")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--dump-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    figures = figures_of(__file__, argv, args.dump_dir, partial(run, args))
    result = {"db": args.db, "batch": args.batch, "load_average": os.getloadavg(), **figures}
    print(json.dumps(result))
    if args.profile:
        for name in ("send", "history"):
            print(f"\ncProfile {name}, self time by layer:")
            for layer, pct in split.cprofile_layers(pstats.Stats(f"{args.profile}.{name}")):
                print(f"  {pct:5.1f}%  {layer}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
