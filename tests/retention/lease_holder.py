"""A separate process that tries to become the retention leader (run by test_jobs.py).

Prints ``leader`` or ``follower``. A leader then holds the lease until a line arrives on
stdin, runs the job under it if asked (``run``), releases it and exits.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from cmschat.audit.service import audited
from cmschat.clock import SystemClock
from cmschat.db.actors import SYSTEM_RETENTION
from cmschat.db.session import Database, create_engine
from cmschat.jobs.lease import Lease, holder_name


async def main(url: str) -> None:
    db = audited(Database(create_engine(url), SystemClock()))
    lease = Lease(
        db,
        name="retention",
        holder=holder_name(),
        clock=db.clock,
        ttl=timedelta(minutes=10),
        actor=SYSTEM_RETENTION,
    )
    try:
        if not await lease.acquire():
            print("follower", flush=True)
            return
        print("leader", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await lease.release(completed=True)
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
