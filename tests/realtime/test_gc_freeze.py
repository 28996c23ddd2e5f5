"""The serving process freezes what startup left alive out of the garbage collector's
sight, so full collections (a pause every request in flight waits out) walk only what was
made since (docs/performance.md, "Overload: the system test")."""

from __future__ import annotations

import gc
import socket
from types import SimpleNamespace

from starlette.applications import Starlette

from cmschat.cli_server import DrainingServer, uvicorn_config
from cmschat.realtime.connections import Hub
from cmschat.realtime.frozen_connections import FrozenConnections
from cmschat.settings import Settings


class Probe(DrainingServer):
    """Stops as soon as it would serve, noting how many objects were frozen by then."""

    frozen = 0

    async def main_loop(self) -> None:
        self.frozen = gc.get_freeze_count()


async def test_startup_freezes_what_is_alive(settings: Settings) -> None:
    app = Starlette()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = Probe(uvicorn_config(app, settings, host="127.0.0.1", port=0), app)
    gc.unfreeze()
    try:
        await server._serve(sockets=[listener])
        assert server.frozen > 10_000  # the modules and the app, at least
    finally:
        gc.unfreeze()  # the test process goes on making and dropping apps
        listener.close()


async def test_startup_has_the_hub_freeze_the_connections(settings: Settings) -> None:
    """The serving process, not every app (tests' apps keep Python's collector as it is),
    has the hub tell FrozenConnections when connections open and close."""
    app = Starlette()
    app.state.context = SimpleNamespace(hub=Hub(), draining=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = Probe(uvicorn_config(app, settings, host="127.0.0.1", port=0), app)
    gc.unfreeze()
    try:
        await server._serve(sockets=[listener])
    finally:
        gc.unfreeze()
        listener.close()
    frozen = getattr(app.state.context.hub.counted, "__self__", None)
    assert isinstance(frozen, FrozenConnections)
    assert not frozen._draining()
    app.state.context.draining = True  # neither freezes nor thaws from then on
    assert frozen._draining()
