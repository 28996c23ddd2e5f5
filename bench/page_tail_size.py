"""Bytes per message of a SQLite database of N seeded messages, the file after ``VACUUM``.

The seeder (``history.seed``) stores each message's history tail as its send would when
the code on ``PYTHONPATH`` has the column (``messages.page_tail``), so the same command
with a "before" ``src`` and with this one gives the tail's cost in bytes.

Run::

    PYTHONPATH=src .venv/bin/python bench/page_tail_size.py --messages 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from datetime import UTC, datetime

import common
import history
from sqlalchemy import insert, select


async def measure(count: int) -> dict[str, object]:
    """Seed ``count`` messages into a fresh migrated SQLite file, vacuum it, size it."""
    from cmschat.accounts.models import User
    from cmschat.chat.models import Room, RoomKind
    from cmschat.db.session import create_engine

    backend = common.Backend("sqlite")
    try:
        backend.create_admin("size-bench-password")  # also migrates
        engine = create_engine(backend.database_url)
        now, actor = datetime.now(UTC), "system:bench"
        stamps = {"created_at": now, "created_by": actor, "updated_at": now, "updated_by": actor}
        async with engine.begin() as conn:
            author = (await conn.execute(select(User.__table__.c.id))).scalar_one()
            room = (
                await conn.execute(
                    insert(Room.__table__).values(kind=RoomKind.group, name="size", **stamps)
                )
            ).inserted_primary_key[0]
        await engine.dispose()
        await history.seed(
            backend.database_url, room_id=room, author_id=author, count=count, batch=5000
        )
        path = backend.workdir / "var" / "cmschat.db"
        connection = sqlite3.connect(path)
        try:
            connection.execute("VACUUM")
            columns = {row[1] for row in connection.execute("PRAGMA table_info(messages)")}
            tails = 0
            if "page_tail" in columns:
                tails = connection.execute("SELECT count(page_tail) FROM messages").fetchone()[0]
        finally:
            connection.close()
        size = path.stat().st_size
        return {
            "messages": count,
            "with_tail": tails,
            "file_bytes": size,
            "bytes_per_message": round(size / count, 1),
            "source": common.source_state(),
        }
    finally:
        await backend.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.messages)), indent=2))


if __name__ == "__main__":
    main()
