"""What SQLite spends on a history page's statement, by what the statement asks of it.

Three statements over the same page of the same database, each run in this process with
the ``sqlite3`` module (no server, no event loop) and counted by callgrind (its
instructions by object, ``callgrind_objects``):

- ``shipped``: the page as served (``chat.messages.reads``): SQLite writes each message's
  JSON (``printf``, ``json_quote``, ``json_object``, the stamps' ``replace``, the ordered
  subqueries joined by ``group_concat``);
- ``raw``: the same rows, joins and correlated subqueries with the columns as stored (the
  mentions' and ready files' ids by ``group_concat``, unordered): the B-tree and VDBE work
  any page needs. ``shipped`` less ``raw`` is what writing the JSON costs the engine;
- ``stored``: an experiment, not the schema: each message's JSON text kept in a column of
  its own (``messages.page_json``, added and filled by ``fill_stored`` from ``shipped``'s
  own texts, outside valgrind) and read as stored, as a page would if the send and every
  later change wrote it.

``served_page.py --split`` fills the column and runs this on its scratch database once the
server is gone::

    valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/page_engine.py \
        DB ROOM_ID PAGES [CURSOR ...] --dump-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import children
import common
from callgrind_objects import ENGINE, by_object
from observability_overhead import Callgrind
from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from cmschat.attachments.models import AttachmentState
from cmschat.chat.messages import reads
from cmschat.chat.messages.rows import ATTACHMENTS, MENTIONS, MESSAGES, USERS

DIALECT = sqlite.dialect()  # type: ignore[no-untyped-call]
VARIANTS = ("shipped", "raw", "stored")
_FILL_BATCH = 20_000


def _raw(*, cursor: bool) -> tuple[str, tuple[Any, ...]]:
    m, u, a = MESSAGES.c, USERS.c, ATTACHMENTS.c
    mentioned = (
        select(func.group_concat(MENTIONS.c.user_id))
        .where(MENTIONS.c.message_id == m.id)
        .scalar_subquery()
    )
    ready = (
        select(func.group_concat(a.id))
        .where(a.message_id == m.id, a.state == bindparam("ready"))
        .scalar_subquery()
    )
    columns = (m.id, m.room_id, m.seq, u.id, u.username, u.display_name, m.content)
    columns += (m.content_html, m.reply_to_id, m.created_at, m.updated_at, m.edited_at)
    statement = (
        select(*columns, m.deleted_at, mentioned, ready)
        .select_from(MESSAGES.outerjoin(USERS, u.id == m.author_id))
        .where(m.room_id == bindparam("room_id"))
    )
    if cursor:
        statement = statement.where(m.seq < bindparam("cursor"))
    statement = statement.order_by(m.seq.desc()).limit(bindparam("limit"))
    compiled = cast(SQLCompiler, statement.compile(dialect=DIALECT))
    names = ("ready", "room_id", "cursor", "limit") if cursor else ("ready", "room_id", "limit")
    order = tuple(compiled.positiontup or ())
    if order[: len(names)] != names:
        raise RuntimeError(f"parameters compile as {order}")
    return compiled.string, tuple(compiled.params[name] for name in order[len(names) :])


def _stored(*, cursor: bool) -> str:
    where = "room_id = ?" + (" AND seq < ?" if cursor else "")
    return f"SELECT seq, page_json FROM messages WHERE {where} ORDER BY seq DESC LIMIT ?"  # noqa: S608 - fixed text


def _shipped(*, cursor: bool) -> tuple[str, tuple[Any, ...]]:
    sql, added = (reads._PAGE_BEFORE if cursor else reads._PAGE_NEWEST).sql(DIALECT)
    return sql, added


def _parameters(variant: str, room_id: int, cursor: int | None) -> tuple[Any, ...]:
    ready = AttachmentState.ready.value
    at = () if cursor is None else (cursor,)
    if variant == "stored":
        return (room_id, *at, 51)
    return (ready, room_id, *at, 51)


def fill_stored(connection: sqlite3.Connection, room_id: int) -> int:
    """Add ``messages.page_json`` and fill it with the shipped statement's texts."""
    # The fill's UPDATE would clear every stored tail (migration 0010's trigger) and turn
    # ``shipped`` into the statement built as before: off on this scratch copy.
    connection.execute("DROP TRIGGER IF EXISTS messages_page_tail_clear")
    connection.execute("ALTER TABLE messages ADD COLUMN page_json TEXT")
    sql, added = _shipped(cursor=True)
    ready = AttachmentState.ready.value
    cursor, filled = 1 << 62, 0
    while True:
        # A bigger page than the API's: the statement's LIMIT is a parameter.
        found = connection.execute(sql, (ready, room_id, cursor, _FILL_BATCH, *added)).fetchall()
        if not found:
            break
        connection.executemany(
            "UPDATE messages SET page_json = ? WHERE room_id = ? AND seq = ?",
            [(text, room_id, seq) for seq, text in found],
        )
        filled += len(found)
        cursor = found[-1][0]
    connection.commit()
    return filled


def count(
    database: str, room_id: int, pages: int, cursors: list[int], dumps: Path
) -> dict[str, Any]:
    """Each variant's instructions per page, by object (the engine's apart)."""
    connection = sqlite3.connect(database)
    probe = Callgrind(dumps, keep=True)
    figures: dict[str, Any] = {}
    for variant in VARIANTS:
        statements = {}
        for has_cursor in (False, True):
            if variant == "shipped":
                statements[has_cursor] = _shipped(cursor=has_cursor)
            elif variant == "raw":
                statements[has_cursor] = _raw(cursor=has_cursor)
            else:
                statements[has_cursor] = (_stored(cursor=has_cursor), ())
        plan = [cursors[n % len(cursors)] if cursors else None for n in range(pages)]

        def read(cursor: int | None, variant: str = variant, ran: Any = statements) -> int:
            sql, added = ran[cursor is not None]
            found = connection.execute(sql, (*_parameters(variant, room_id, cursor), *added))
            return len(found.fetchall())

        for cursor in plan[:10]:
            read(cursor)
        probe.start()
        rows = sum(read(cursor) for cursor in plan)
        probe.stop(variant)
        groups = by_object(dumps / f"cg.{variant}.out")
        figures[variant] = {
            "rows_per_page": rows / pages,
            "all": round(sum(groups.values()) / pages),
            "engine": round(groups.get(ENGINE, 0) / pages),
            "by_object": {
                k: round(v / pages) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
            },
        }
    connection.close()
    return figures


def measured(
    database: str, room_id: int, pages: int, cursors: list[int], *, env: dict[str, str]
) -> dict[str, Any]:
    """Fill ``page_json`` here, then count each variant in this script under callgrind."""
    with closing(sqlite3.connect(database)) as connection:
        filled = fill_stored(connection, room_id)
    with tempfile.TemporaryDirectory() as dumps:
        child = subprocess.run(  # noqa: S603 - our own script under a fixed tool
            common.under_callgrind(
                dumps,
                sys.executable,
                __file__,
                database,
                str(room_id),
                str(pages),
                *map(str, cursors),
                "--dump-dir",
                dumps,
            ),
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            preexec_fn=children.with_parent(),
        )
    if child.returncode != 0:
        raise RuntimeError(f"page_engine.py failed: {child.stderr[-3000:]}")
    return {"stored_rows_filled": filled, **json.loads(child.stdout.strip().splitlines()[-1])}


def main() -> None:
    """Count (under callgrind) and print the figures as JSON, last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database")
    parser.add_argument("room_id", type=int)
    parser.add_argument("pages", type=int)
    parser.add_argument("cursors", type=int, nargs="*")
    parser.add_argument("--dump-dir", required=True)
    args = parser.parse_args()
    figures = count(args.database, args.room_id, args.pages, args.cursors, Path(args.dump_dir))
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
