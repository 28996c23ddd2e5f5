"""What mariadbd spends on each statement of a history page, statement by statement.

Seeds a room (``history.seed``, every message with its stored tail) in a scratch
database, then runs each variant ``--runs`` times in a row over one asyncmy connection
(autocommit, ``READ COMMITTED``, as the readers' kept connections read) and reports, per
execution, the CPU of the server thread serving that connection (``schedstat`` of the
thread in /proc, nanoseconds: other clients of the server, the lead's benchmarks
included, do not count), this process's CPU, and the session's handler reads
(``SHOW SESSION STATUS``). No wall-clock figure is used.

Variants:

- ``select1``: ``SELECT 1``, the connection's per-statement floor;
- ``token``: the caller's token row (``accounts.auth``), as the hot route reads it;
- ``page``: the newest page of 51 as shipped (``chat.messages.reads``: heads and stored
  tails);
- ``page_untailed``: ``page`` over 51 rows without a stored tail, and their read by id
  (``chat.messages.page_built``); ``built_1``: that read for one row;
- ``page_old``: the page's one statement before ``page_built`` (``_old_page``: the
  CASE-guarded columns and correlated subqueries for rows without a tail);
- ``page_old_no_sub``: ``page_old`` less all those columns (``page``'s shape);
- ``page_old_plain_case``: with its CASE-guarded plain columns, no subquery;
- ``page_old_no_files`` / ``page_old_no_mentions``: less one of its two subqueries;
- ``page_old_files_concat``, ``_files_ids``, ``_files_concat_ws``, ``_files_forced``,
  ``_files_any_state``: the ready files' subquery with ``GROUP_CONCAT`` for
  ``JSON_ARRAYAGG``, only the ids, ``CONCAT_WS`` for ``JSON_ARRAY``, an index hint, no
  state condition (which of its parts costs);
- ``page_old_untailed``: ``page_old`` over the 51 rows without a tail;
- ``*_prepared``: the statement as a server-side prepared statement (asyncmy's
  ``Connection.prepare``, the binary protocol), prepared once, executed each time.

Run::

    .venv/bin/python bench/page_statements.py --messages 200000 --runs 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import common
import history

Run = Callable[[], Awaitable[Any]]
_STATUS = (
    "Handler_read_key",
    "Handler_read_prev",
    "Created_tmp_tables",
    "Created_tmp_disk_tables",
    "Questions",
)


def _thread_ns(pid: int, tid: int) -> int:
    with open(f"/proc/{pid}/task/{tid}/schedstat") as found:
        return int(found.read().split()[0])


async def _status(cursor: Any) -> dict[str, int]:
    await cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN %s", (_STATUS,))
    return {name: int(value) for name, value in await cursor.fetchall()}


async def _measure(cursor: Any, pid: int, tid: int, run: Run, runs: int) -> dict[str, float]:
    for _ in range(min(200, runs)):  # warm: caches, the statement's plan
        await run()
    before = await _status(cursor)
    server, client = _thread_ns(pid, tid), time.process_time()
    for _ in range(runs):
        await run()
    server, client = _thread_ns(pid, tid) - server, time.process_time() - client
    after = await _status(cursor)
    # SHOW STATUS counts itself once among the Questions (and reads no handler).
    shown = {name: (after[name] - before[name]) / runs for name in _STATUS}
    shown["Questions"] = (after["Questions"] - before["Questions"] - 1) / runs
    return {"server_us": server / runs / 1000, "client_us": client / runs * 1e6, **shown}


def _qmark(sql: str) -> str:
    """asyncmy's ``%s`` paramstyle as the binary protocol's ``?``."""
    return re.sub(r"%s", "?", sql).replace("%%", "%")


def _old_page(*, before: bool) -> Any:
    """The page's one statement as shipped before ``page_built`` (commit 3473d8d): each
    message's head, its stored tail and, CASE-guarded for a row without one, the other
    columns, the mentions (``GROUP_CONCAT``) and the ready files (``JSON_ARRAYAGG``) as
    correlated subqueries. Its parameters: ready, room, (cursor,) limit."""
    from sqlalchemy import bindparam, case, func, select

    from cmschat.chat.messages import rows

    m, a, u = rows.MESSAGES.c, rows.ATTACHMENTS.c, rows.USERS.c
    mentioned = (
        select(func.group_concat(rows.MENTIONS.c.user_id))
        .where(rows.MENTIONS.c.message_id == m.id)
        .scalar_subquery()
    )
    values = func.json_array(*(a[name] for name in rows.ATTACHMENT_FIELDS))
    files = (
        select(func.json_arrayagg(values))
        .where(a.message_id == m.id, a.state == bindparam("ready"))
        .scalar_subquery()
    )
    built = (
        m.content,
        m.content_html,
        m.reply_to_id,
        m.created_at,
        func.nullif(m.updated_at, m.created_at),
        m.edited_at.is_not(None),
        m.deleted_at.is_not(None),
        mentioned,
        files,
    )
    stored = m.page_tail.is_not(None)
    head = (m.id, m.room_id, m.seq, m.author_id, u.username, u.display_name, m.page_tail)
    statement = (
        select(*head, *(case((stored, None), else_=column) for column in built))
        .select_from(rows.MESSAGES.outerjoin(rows.USERS, u.id == m.author_id))
        .with_hint(rows.MESSAGES, "FORCE INDEX (uq_messages_room_id_seq)", dialect_name="mysql")
        .where(m.room_id == bindparam("room_id"))
    )
    if before:
        statement = statement.where(m.seq < bindparam("cursor"))
    return statement.order_by(m.seq.desc()).limit(bindparam("limit"))


async def measure(args: argparse.Namespace) -> None:
    import asyncmy
    from sqlalchemy.dialects import mysql

    from cmschat.accounts import auth
    from cmschat.attachments.models import AttachmentState
    from cmschat.chat.messages import page_built, reads, rows
    from cmschat.db.driver_sql import Statement

    async with common.environment("mariadb") as (backend, _servers, api):
        users = await api.create_users(2, prefix="s")
        room_id = await api.create_room(users[0], users, "statements room")
        await history.seed(
            backend.database_url,
            room_id=room_id,
            author_id=users[0].id,
            count=args.messages,
            batch=5000,
        )
        dialect = mysql.asyncmy.dialect()  # type: ignore[attr-defined]
        new_sql, _ = reads._PAGES[2].sql(dialect)
        new_older_sql, _ = reads._PAGES[1].sql(dialect)
        built_sql = {size: page_built._BUILT(size).sql(dialect)[0] for size in (1, 51)}
        page_sql, _ = Statement(
            lambda _d: _old_page(before=False), ("ready", "room_id", "limit")
        ).sql(dialect)
        older_sql, _ = Statement(
            lambda _d: _old_page(before=True), ("ready", "room_id", "cursor", "limit")
        ).sql(dialect)
        token_sql, _ = auth._TOKEN_ROW.sql(dialect)
        ready = rows.ATTACHMENTS.c.state.type._cached_bind_processor(dialect)
        ready_value = AttachmentState.ready if ready is None else ready(AttachmentState.ready)
        # The page without the columns a row with a stored tail does not need.
        cut = page_sql.index(", CASE WHEN")
        no_sub = page_sql[:cut] + page_sql[page_sql.index(" \nFROM messages") :]
        mentions_at = page_sql.index(
            ", CASE WHEN (messages.page_tail IS NOT NULL) THEN NULL ELSE (SELECT group"
        )
        files_at = page_sql.index(
            ", CASE WHEN (messages.page_tail IS NOT NULL) THEN NULL ELSE (SELECT json"
        )
        end = page_sql.index(" \nFROM messages")
        # The page less one of its subquery columns, or both (the ready files' parameter
        # goes with the files' column).
        no_files = page_sql[:files_at] + page_sql[end:]
        no_mentions = page_sql[:mentions_at] + page_sql[files_at:]
        plain_case = page_sql[:mentions_at] + page_sql[end:]
        files_concat = page_sql.replace("json_arrayagg(json_array(", "group_concat(json_array(")
        files_forced = page_sql.replace(
            "FROM attachments \n", "FROM attachments FORCE INDEX (ix_attachments_message_id) \n"
        )
        files_any = page_sql.replace(" AND attachments.state = %s", "")
        array_at = page_sql.index("json_arrayagg(json_array(")
        array_end = page_sql.index(") AS json_arrayagg_1")
        files_ids = page_sql[:array_at] + "group_concat(attachments.id" + page_sql[array_end:]
        inner = page_sql[array_at + len("json_arrayagg(json_array(") : array_end - 1]
        files_ws = (
            page_sql[:array_at]
            + "group_concat(concat_ws(',', "
            + inner
            + ") SEPARATOR ';'"
            + page_sql[array_end:]
        )
        connection = await asyncmy.connect(
            host="127.0.0.1", user="root", database=backend.mariadb_name, autocommit=True
        )
        try:
            cursor = connection.cursor()
            await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await cursor.execute(
                "SELECT tid FROM information_schema.processlist WHERE id = CONNECTION_ID()"
            )
            (tid,) = await cursor.fetchone()
            pid = common.find_pids(("mariadbd",))["mariadbd"]
            await cursor.execute("SELECT token_hash FROM auth_tokens LIMIT 1")
            (digest,) = await cursor.fetchone()
            # Rows far below the newest page lose their tails: a page of rows built by the
            # statement's subqueries (a room's old messages, before tails were stored).
            await cursor.execute(
                "UPDATE messages SET page_tail = NULL WHERE room_id = %s AND seq <= 60",
                (room_id,),
            )

            def text(sql: str, parameters: tuple[Any, ...]) -> Run:
                async def run() -> Any:
                    await cursor.execute(sql, parameters)
                    return await cursor.fetchall()

                return run

            page_prepared = await connection.prepare(_qmark(page_sql))
            new_prepared = await connection.prepare(_qmark(new_sql))
            token_prepared = await connection.prepare(_qmark(token_sql))
            page_args = (ready_value, room_id, 51)
            await cursor.execute(
                "SELECT id FROM messages WHERE room_id = %s AND seq < 61 ORDER BY seq DESC "
                "LIMIT 51",
                (room_id,),
            )
            untailed_ids = tuple(row[0] for row in await cursor.fetchall())
            newest_page = text(new_sql, (room_id, 51))
            newest_untailed = text(new_older_sql, (room_id, 61, 51))
            built_all = text(built_sql[51], (ready_value, *untailed_ids))

            async def untailed_now() -> Any:
                await newest_untailed()
                return await built_all()

            variants: dict[str, Run] = {
                "select1": text("SELECT 1", ()),
                "token": text(token_sql, (digest,)),
                "page": newest_page,
                "page_untailed": untailed_now,
                "built_1": text(built_sql[1], (ready_value, untailed_ids[0])),
                "page_old": text(page_sql, page_args),
                "page_old_no_sub": text(no_sub, page_args[1:]),
                "page_old_plain_case": text(plain_case, page_args[1:]),
                "page_old_no_files": text(no_files, page_args[1:]),
                "page_old_no_mentions": text(no_mentions, page_args),
                "page_old_files_concat": text(files_concat, page_args),
                "page_old_files_forced": text(files_forced, page_args),
                "page_old_files_any_state": text(files_any, page_args[1:]),
                "page_old_files_ids": text(files_ids, page_args),
                "page_old_files_concat_ws": text(files_ws, page_args),
                "page_old_untailed": text(older_sql, (ready_value, room_id, 61, 51)),
                "page_old_prepared": lambda: page_prepared.execute(page_args),
                "page_prepared": lambda: new_prepared.execute((room_id, 51)),
                "token_prepared": lambda: token_prepared.execute((digest,)),
            }
            chosen = args.variants or list(variants)
            common.log(f"load average at start: {os.getloadavg()}")
            print(f"{'variant':16} {'server µs':>10} {'client µs':>10} " + " ".join(_STATUS))
            for name in chosen:
                found = await _measure(cursor, pid, tid, variants[name], args.runs)
                print(
                    f"{name:16} {found['server_us']:10.1f} {found['client_us']:10.1f} "
                    + " ".join(f"{found[key]:.1f}" for key in _STATUS),
                    flush=True,
                )
            if args.show_sql:
                print(page_sql)
        finally:
            await connection.ensure_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--variants", nargs="*")
    parser.add_argument("--show-sql", action="store_true")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
