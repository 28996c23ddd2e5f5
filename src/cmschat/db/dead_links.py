"""Giving up a MariaDB connection whose other end is gone without a word.

When the database's host is cut off (no reset ever comes), a statement sent on a pooled
connection waits for an answer until TCP gives up: many minutes. TCP is told to give up
sooner instead: data sent and not acknowledged for ``seconds`` ends the connection
(``TCP_USER_TIMEOUT``), and an idle one is probed (keepalive) so that a dead link is found
before it is used. A statement the server is still working on is not affected: its request
was acknowledged at once, and the server's kernel answers the probes while it works. So
only a link that is gone fails, with the usual ``database_unavailable``. (asyncmy's own
``read_timeout`` could not tell a long statement from a dead link, and cost a task per
read: seven per send.)
"""

from __future__ import annotations

import socket
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


def give_up_dead_links(engine: AsyncEngine, seconds: float) -> None:
    """Every new connection of ``engine`` ends after ``seconds`` of a silent peer."""
    idle = max(1, int(seconds / 2))
    options = (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, int(seconds) - idle)),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000)),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        transport = dbapi_connection._connection._transport  # asyncmy's, public in its .pxd
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return
        for level, option, value in options:
            sock.setsockopt(level, option, value)
