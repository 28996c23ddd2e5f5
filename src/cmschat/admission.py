"""Admission control: how many sends this process works on at once, and refusing the rest.

Past its capacity a server that takes every send only makes every sender wait longer
(queues grow, transactions time out, keep-alives go unanswered and sockets close). Counting
the sends in flight and refusing those past a limit, at once and cheaply, keeps the
accepted ones at their normal latency; the refused ones are told when to try again (HTTP
503 with ``Retry-After``, a WebSocket ``busy`` error frame with ``retry_after``). Nothing
here closes a connection.
"""

from __future__ import annotations

from types import TracebackType

from cmschat.errors import Overloaded


class Admission:
    """Counts the sends in flight in this process; past ``limit`` a new one is refused."""

    def __init__(self, limit: int, *, retry_after: int = 1) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0
        self.refused = 0
        """Sends refused since start (for tests and the log; the metric counts too)."""

    def sends(self) -> Admission:
        """``async with admission.sends():`` around one send; raises ``Overloaded`` when full."""
        return self

    async def __aenter__(self) -> None:
        if self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(
                "the server is busy; send again in a moment", retry_after=self.retry_after
            )
        self.in_flight += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.in_flight -= 1
