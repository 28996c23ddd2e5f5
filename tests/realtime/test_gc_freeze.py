"""The serving process freezes what startup left alive out of the garbage collector's
sight, so full collections (a pause every request in flight waits out) walk only what was
made since (docs/performance.md, "Overload: the system test"), and spaces those full
collections out (docs/performance.md, "The server's full collections")."""

from __future__ import annotations

import gc
import socket

from starlette.applications import Starlette

from cmschat.cli_server import DrainingServer, uvicorn_config
from cmschat.settings import Settings


class Probe(DrainingServer):
    """Stops as soon as it would serve, noting the garbage collector's state by then."""

    frozen = 0
    thresholds = (0, 0, 0)

    async def main_loop(self) -> None:
        self.frozen = gc.get_freeze_count()
        self.thresholds = gc.get_threshold()


async def started(settings: Settings) -> Probe:
    """A server that started and stopped, the test process's collector left as it was."""
    app = Starlette()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = Probe(uvicorn_config(app, settings, host="127.0.0.1", port=0), app)
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        await server._serve(sockets=[listener])
    finally:
        gc.unfreeze()  # the test process goes on making and dropping apps
        gc.set_threshold(*thresholds)
        listener.close()
    return server


async def test_startup_freezes_what_is_alive(settings: Settings) -> None:
    server = await started(settings)
    assert server.frozen > 10_000  # the modules and the app, at least


async def test_startup_spaces_out_full_collections(settings: Settings) -> None:
    server = await started(settings)
    young, middle, full = server.thresholds
    assert (young, middle) == (700, 10)  # young and middle collections stay small
    assert middle * full >= 100 * 100  # a full one per 10,000 young, not per 100
