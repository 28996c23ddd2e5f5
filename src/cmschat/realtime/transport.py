"""uvicorn's wsproto WebSocket protocol, plus: a connection given up on is aborted.

When a client stops reading, its socket stops draining and uvicorn pauses writing. Ending
the handler then is not enough: uvicorn closes the transport the polite way, which waits
for the buffered bytes to leave — forever, for a client that never reads (one stayed
connected for a whole 172 s test with 2.8 MB stuck). This protocol aborts the transport
instead whenever it is still blocked when the connection is over, and tells a keep-alive
time-out (the client stopped answering pings) apart from an overload close in the log and
in ``cmschat_websocket_closes_total``.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

from cmschat.observability import instruments as m

log = logging.getLogger(__name__)


class AbortingWSProtocol(WSProtocol):
    """``ws=`` for uvicorn: as ``wsproto``, but never waits on an unwritable socket to close."""

    async def run_asgi(self) -> None:
        """Run the app; if it is done while the socket cannot be written, drop the socket."""
        await super().run_asgi()
        if not self.writable.is_set():
            # Even after a close frame: closing politely waits for the client to read.
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        """No pong in time: uvicorn closes with 1011; counted and logged as what it is."""
        if not self.close_sent and not self.transport.is_closing():
            m.WS_CLOSES.labels(reason="keepalive_timeout").inc()
            log.info(
                "closing a WebSocket that stopped answering pings (1011)",
                extra={"event.action": "websocket.keepalive_timeout"},
            )
        super().keepalive_timeout()
        if not self.writable.is_set():
            self.transport.abort()
