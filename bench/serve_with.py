"""``cmschat serve`` under a chosen server, so the benchmarks can compare servers.

Not run by hand: every tool's ``--server`` option starts the server through it.

* ``uvicorn-h11`` / ``uvicorn-httptools``: ``cmschat serve`` itself (uvloop, the shipped
  wsproto protocol), with uvicorn's HTTP/1.1 implementation set to h11 or to uvicorn's stock
  httptools protocol (header names lower-cased). Without ``--server`` the tools run what
  ``serve`` ships: httptools with the app's header names (``cmschat.api.transport``).
* ``granian``: the same app under granian (Rust HTTP and WebSocket, ASGI interface, one
  worker process, uvloop). granian has no settings for the WebSocket frame limit, the
  keep-alive ping, nor a graceful-shutdown time limit; those behaviours are missing here.

    .venv/bin/python bench/serve_with.py granian serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SERVERS = ("uvicorn-h11", "uvicorn-httptools", "granian")


def granian_app() -> Any:
    """The ASGI app granian's worker imports (``factory=True``): settings from the environment."""
    from cmschat.app import create_app
    from cmschat.observability.logging import configure_logging
    from cmschat.settings import load_settings

    settings = load_settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    return create_app(settings)


def serve_granian(argv: list[str]) -> None:
    """Migrate as ``cmschat serve`` does, then run granian in the foreground."""
    from granian import Granian
    from granian.constants import Interfaces

    from cmschat.cli import _prepare_first_run
    from cmschat.cli_support import run
    from cmschat.settings import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    run(_prepare_first_run(load_settings()))
    Granian(
        "serve_with:granian_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        websockets=True,
        log_enabled=True,
        log_access=False,
    ).serve()


def main() -> None:
    """``serve_with.py SERVER serve --host H --port P``."""
    server, rest = sys.argv[1], sys.argv[2:]
    if server not in SERVERS:
        raise SystemExit(f"unknown server {server!r}; one of {', '.join(SERVERS)}")
    if server == "granian":
        serve_granian(rest)
        return
    import cmschat.cli
    import cmschat.cli_server

    cmschat.cli_server.HTTP_IMPLEMENTATION = server.removeprefix("uvicorn-")
    # The swap holds in this process only; spawned workers would serve with the default.
    workers = [] if "--workers" in rest else ["--workers", "1"]
    sys.argv = ["cmschat", *rest, *workers]
    cmschat.cli.main()


if __name__ == "__main__":
    main()
