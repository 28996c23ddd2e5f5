"""One serving process of ``cmschat serve``: the app under uvicorn, draining on SIGTERM.

Run directly by ``serve`` with one worker, or in each worker process ``cli_workers`` starts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from types import FrameType
from typing import Any, NoReturn

import uvicorn

from cmschat.api.transport import CaseKeepingHttpToolsProtocol
from cmschat.realtime.frozen_connections import FrozenConnections
from cmschat.realtime.transport import AbortingWSProtocol
from cmschat.settings import Settings

# The HTTP/1.1 implementation under the app; bench/serve_with.py swaps it to compare servers
# (in this process: run it with --workers 1).
HTTP_IMPLEMENTATION: type[asyncio.Protocol] | str = CaseKeepingHttpToolsProtocol
PYTHON_SWITCH_INTERVAL_MS = 5.0  # CPython's default, sys.getswitchinterval() at start

log = logging.getLogger("cmschat.server")

TRANSPORT_FRAME_FACTOR = 4
"""The WebSocket transport closes the connection (1009) only for a frame over this many
times ``CMSCHAT_REALTIME__MAX_FRAME_BYTES``, buffering no more than that (256 KiB by
default). A frame between the two gets the app's ``frame_too_large`` error frame and the
socket stays open: a person who pasted too much is told so, not disconnected, and a client
that sends its unsent messages again after a reconnect does not loop on one."""


def apply_switch_interval(milliseconds: float) -> None:
    """Set this process's GIL switch interval, logging it once when it is not Python's."""
    sys.setswitchinterval(milliseconds / 1000)
    if milliseconds != PYTHON_SWITCH_INTERVAL_MS:
        # Read back: what the interpreter uses (it keeps whole microseconds).
        applied = sys.getswitchinterval() * 1000
        log.info(
            "GIL switch interval: %g ms (Python's default: %g ms)",
            applied,
            PYTHON_SWITCH_INTERVAL_MS,
        )


def _stopped(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: from the first SIGTERM, /readyz says 503 and new WebSockets are refused."""

    def __init__(self, config: uvicorn.Config, application: Any) -> None:
        super().__init__(config)
        self.application = application

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, then freeze what is alive after startup out of the garbage collector's
        sight: a full collection walked those ~190,000 objects (modules, the app, the
        engine) in ~115 ms of CPU, a pause every send in flight then waited out (p99
        send -> deliver at normal load, docs/performance.md). They live as long as the
        process, so they never were garbage; what is made later is still collected."""
        await super().startup(sockets=sockets)
        gc.collect()
        gc.freeze()
        context = getattr(self.application.state, "context", None)
        if context is not None:
            # And, once they have opened, the connections' objects: frozen_connections.py.
            # Neither once draining: every connection is closing and the process ending.
            frozen = FrozenConnections(draining=lambda: bool(context.draining))
            context.hub.counted = frozen.counted

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Mark the app as draining, then let uvicorn stop gracefully."""
        context = getattr(self.application.state, "context", None)
        if context is not None:
            context.draining = True
        super().handle_exit(sig, frame)


def uvicorn_config(application: Any, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """How cmschat runs under uvicorn (the same in every worker)."""
    return uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        server_header=False,
        # Proxy headers are resolved by the app, only for CMSCHAT_TRUSTED_PROXIES.
        proxy_headers=False,
        # httptools parses in C: a served page costs ~15 % fewer instructions than under
        # h11 (docs/performance.md, "The server under the app"). uvicorn's own httptools
        # protocol lower-cases header names, and some clients look them up case-sensitively
        # (the contract smoke does): this one writes them as the app does, as h11 did.
        http=HTTP_IMPLEMENTATION,
        # wsproto without permessage-deflate: ~24 KiB per idle connection instead of 34-126
        # (measured, docs/performance.md); chat frames are small.
        # Aborts a connection whose client stopped reading instead of waiting on it.
        ws=AbortingWSProtocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.realtime.max_frame_bytes * TRANSPORT_FRAME_FACTOR,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        timeout_keep_alive=settings.http_keep_alive_seconds,
    )


def serve_process(
    settings: Settings,
    *,
    host: str,
    port: int,
    listener: socket.socket | None = None,
    worker: int | None = None,
) -> None:
    """Serve until SIGTERM in this process; on ``listener`` when a supervisor bound it."""
    from cmschat.app import create_app
    from cmschat.monitoring.sampler import name_this_instance

    # The whole process's, so set here, where every serving process (each worker) passes.
    apply_switch_interval(settings.gil_switch_interval_ms)
    name_this_instance(port=port, worker=worker)
    application = create_app(settings)
    config = uvicorn_config(application, settings, host=host, port=port)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal, which would
    # end the process as "killed" (status 143); a requested stop that completed is a success.
    signal.signal(signal.SIGTERM, _stopped)
    DrainingServer(config, application).run(sockets=None if listener is None else [listener])
