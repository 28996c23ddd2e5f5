"""Instructions of a unit of work's parts, below a send batch: what its fixed cost is made of.

In one process as shipped (``create_app``'s context), each counted ``--count`` times:
``empty`` a writing unit of work that runs nothing; ``begin`` one that begins its
transaction (the driver asked for) and commits around no statement; ``audit`` the same
with one audit event recorded (chained at its commit); ``writer`` the group commit
writer's transaction (``db.writer``, no ORM session) begun and committed around no
statement, where the src has one; ``send`` a whole one-send batch of the group commit (a
client id and a mention, as ``batch_sql.py`` sends). Every thread of the process is
counted (callgrind), so a figure includes the driver thread's SQLite work.

Run::

    .venv/bin/python bench/uow_parts.py --db sqlite --instructions
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import common
from observability_overhead import Callgrind, figures_of
from request_cpu import bench_room, scratch
from sqlalchemy import select

from cmschat.accounts.models import User
from cmschat.app import create_app
from cmschat.audit import service as audit
from cmschat.chat.schemas import MessageCreate
from cmschat.db.actors import SYSTEM_SENDER
from cmschat.db.driver_sql import driver_of


async def run(args: argparse.Namespace, probe: Callgrind | None) -> dict[str, Any]:
    """Warm each part up, then count it."""
    figures: dict[str, Any] = {}
    async with scratch(args.db) as (settings, password):
        app = create_app(settings)
        async with app.router.lifespan_context(app), bench_room(app, password) as (_, _h, url):
            room = int(url.split("/")[-2])
            context = app.state.context
            db = context.db
            async with db.unit_of_work(read_only=True) as session:
                user = (await session.scalars(select(User).where(User.id == 1))).one()
            serial = iter(range(10**9))

            async def empty() -> None:
                async with db.unit_of_work(SYSTEM_SENDER):
                    pass

            async def begin() -> None:
                async with db.unit_of_work(SYSTEM_SENDER) as session:
                    await driver_of(session)

            async def audited() -> None:
                async with db.unit_of_work(SYSTEM_SENDER) as session:
                    await driver_of(session)
                    audit.record(session, action="bench.part", target_type="bench", target_id=1)

            async def writer() -> None:
                async with db.writer_unit_of_work(SYSTEM_SENDER) as transaction:
                    await transaction.driver()

            async def send() -> None:
                draft = MessageCreate(
                    content=f"hello @{common.ADMIN}", client_id=f"c{next(serial)}"
                )
                await context.sends.send(user=user, room_id=room, draft=draft)

            parts: dict[str, Callable[[], Awaitable[None]]] = {
                "empty": empty,
                "begin": begin,
                "audit": audited,
                "writer": writer,
                "send": send,
            }
            if not hasattr(db, "writer"):  # a src from before the writer's own transactions
                del parts["writer"]
            for name, action in parts.items():
                for _ in range(5):
                    await action()
                if probe is not None:
                    probe.start()
                for _ in range(args.count):
                    await action()
                if probe is not None:
                    probe.stop(name)
                    figures[f"{name}_instructions"] = round(probe.counts[name] / args.count)
    return figures


def main(argv: list[str]) -> dict[str, Any]:
    """One count under callgrind (``--instructions``: this script again, counted)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--dump-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    figures = figures_of(__file__, argv, args.dump_dir, partial(run, args))
    result = {"db": args.db, **figures}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
