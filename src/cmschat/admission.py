"""Admission control: how many sends this process works on at once, and refusing the rest.

Past its capacity a server that takes every send only makes every sender wait longer
(queues grow, transactions time out, keep-alives go unanswered and sockets close). Counting
the sends in flight and refusing those past a limit, at once and cheaply, keeps the
accepted ones at their normal latency; the refused ones are told when to try again (HTTP
503 with ``Retry-After``, a WebSocket ``busy`` error frame with ``retry_after``). Nothing
here closes a connection.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from cmschat.errors import Overloaded

BUSY = "the server is busy; send again in a moment"
"""What a refused sender is told (HTTP and WebSocket alike)."""
Refused = Callable[[str], None]
"""Told the transport (``http``, ``websocket``) of each refused send: the metric's hook."""


class Admission:
    """Counts the sends in flight in this process; past ``limit`` a new one is refused."""

    def __init__(
        self, limit: int, *, retry_after: int = 1, on_refused: Refused | None = None
    ) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.on_refused = on_refused
        self.in_flight = 0
        self.refused = 0
        """Sends refused since start (for tests and the log; the metric counts too)."""

    @property
    def full(self) -> bool:
        """Whether a send arriving now would be refused."""
        return self.in_flight >= self.limit

    def refuse(self, transport: str) -> None:
        """Count a send refused because this process is full (the caller answers it)."""
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused(transport)

    def sends(self, transport: str) -> _Send:
        """``async with admission.sends("http"):`` around one send; raises ``Overloaded``
        when full (and tells ``on_refused`` which transport it refused)."""
        return _Send(self, transport)


class _Send:
    """One send's place in its process's admission, held for the ``async with`` block."""

    __slots__ = ("admission", "transport")

    def __init__(self, admission: Admission, transport: str) -> None:
        self.admission = admission
        self.transport = transport

    async def __aenter__(self) -> None:
        admission = self.admission
        if admission.in_flight >= admission.limit:
            admission.refuse(self.transport)
            raise Overloaded(BUSY, retry_after=admission.retry_after)
        admission.in_flight += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.admission.in_flight -= 1
