"""``serve``'s MariaDB connections give up a silent peer after
``CMSCHAT_DATABASE__DEAD_LINK_TIMEOUT`` (TCP is told: ``db/dead_links.py``), and only a
silent peer: a statement the server works on for longer still gets its answer. (A peer
actually cut off: ``tests/faults/test_hosts.py``.)"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import text

from cmschat.app import engine_for
from cmschat.settings import Settings
from tests import support

pytestmark = pytest.mark.mariadb


def settings(dead_link_timeout: float) -> Settings:
    return Settings(
        database_url=support.MARIADB_SERVER + "/",
        database={"dead_link_timeout": dead_link_timeout},  # type: ignore[arg-type]
    )


async def test_tcp_is_told_to_give_up_a_silent_peer() -> None:
    support.mariadb_available()
    engine = engine_for(support.MARIADB_SERVER + "/", settings(8))
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            sock = raw.driver_connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 8000
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 4
    finally:
        await engine.dispose()


async def test_a_statement_longer_than_the_timeout_is_not_cut_short() -> None:
    # asyncmy's read_timeout, tried first, failed this: it could not tell a statement the
    # server works on from a dead link (and cost a task per read).
    support.mariadb_available()
    engine = engine_for(support.MARIADB_SERVER + "/", settings(1))
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT SLEEP(3)"))).scalar() == 0
    finally:
        await engine.dispose()
