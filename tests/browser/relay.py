"""A TCP relay in front of a server whose WebSocket links can be cut silently, as a
network partition cuts them: bytes stop in both directions and nobody is told (no close,
no reset), while new connections go through as before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Link:
    """One relayed connection."""

    websocket: bool = False
    cut: bool = False


@dataclass
class Relay:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target``."""

    target: int
    port: int = 0
    links: list[Link] = field(default_factory=list)
    cut_next: int = 0
    """How many WebSocket links still to come are cut as they open (their upgrade request
    never reaches the server: the client's socket hangs, connecting)."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_websockets(self) -> int:
        """Silence every WebSocket link open now; how many."""
        open_now = [link for link in self.links if link.websocket and not link.cut]
        for link in open_now:
            link.cut = True
        return len(open_now)

    def websockets_opened(self) -> int:
        return sum(link.websocket for link in self.links)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        link = Link()
        self.links.append(link)
        server, to_server = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if not link.websocket and b"upgrade: websocket" in data.lower():
                    link.websocket = True
                    if self.cut_next > 0:
                        self.cut_next -= 1
                        link.cut = True
                if not link.cut:
                    sink.write(data)
                    await sink.drain()
            if not link.cut:  # a cut link passes on nothing, not even a close
                sink.close()

        self._tasks.add(task := asyncio.current_task())  # type: ignore[arg-type]
        try:
            await asyncio.gather(pump(client, to_server), pump(server, to_client))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            to_server.close()
            to_client.close()


@contextlib.asynccontextmanager
async def relay_to(target: int) -> AsyncIterator[Relay]:
    """A relay to ``target`` on a free port, stopped (its links closed) afterwards."""
    relay = Relay(target)
    server = await asyncio.start_server(relay._relay, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        for task in list(relay._tasks):
            task.cancel()
        await server.wait_closed()
