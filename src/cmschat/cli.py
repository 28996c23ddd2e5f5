"""The ``cmschat`` command: serve and migrate; account commands live in ``cli_users``,
operations commands in ``cli_operations``, what all commands share in ``cli_support``."""

from __future__ import annotations

import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import Annotated, Any, NoReturn

import click
import typer
import uvicorn

from cmschat.accounts import service as accounts
from cmschat.cli_backup import backup_app
from cmschat.cli_operations import audit_app, retention_app
from cmschat.cli_support import open_database, operator_errors, run
from cmschat.cli_users import user_app
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.realtime.transport import AbortingWSProtocol
from cmschat.settings import Settings, load_settings

app = typer.Typer(
    help="cmschat: integrated CMS chat server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cmschat {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """cmschat: integrated CMS chat server."""


app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")
app.add_typer(backup_app, name="backup")


def installed_version() -> str:
    """The installed package's version (the source tree's, when run uninstalled)."""
    try:
        return version("cmschat")
    except PackageNotFoundError:
        from cmschat import __version__

        return __version__


# The HTTP/1.1 implementation under the app; bench/serve_with.py swaps it to compare servers.
HTTP_IMPLEMENTATION = "h11"


def _stopped(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: from the first SIGTERM, /readyz says 503 and new WebSockets are refused."""

    def __init__(self, config: uvicorn.Config, application: Any) -> None:
        super().__init__(config)
        self.application = application

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Mark the app as draining, then let uvicorn stop gracefully."""
        context = getattr(self.application.state, "context", None)
        if context is not None:
            context.draining = True
        super().handle_exit(sig, frame)


async def _migrate(settings: Settings) -> None:
    async with open_database(settings, migrate=True):
        pass


async def _prepare_first_run(settings: Settings) -> str | None:
    async with (
        open_database(settings, migrate=True) as db,
        db.unit_of_work(SYSTEM_SETUP) as session,
    ):
        return await accounts.ensure_first_admin(
            session, bcrypt_rounds=settings.auth.bcrypt_rounds, clock=db.clock
        )


@app.command()
@operator_errors
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8000,
) -> None:
    """Migrate the database if needed, then serve the API, WebSocket and web client."""
    from cmschat.app import create_app
    from cmschat.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    password = run(_prepare_first_run(settings))
    if password is not None:
        # Printed once to the terminal, never logged: it is a secret.
        typer.echo(
            "\ncmschat: created the first admin account.\n"
            f"  username: {accounts.FIRST_ADMIN}\n"
            f"  one-time password: {password}\n"
            "Sign in and change it now; it will not be shown again.\n"
        )
        sys.stdout.flush()
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        server_header=False,
        # Proxy headers are resolved by the app, only for CMSCHAT_TRUSTED_PROXIES.
        proxy_headers=False,
        # h11 sends header names as the app writes them; httptools (and granian) lower-case
        # them all, and some clients look names up case-sensitively (the contract smoke
        # does). httptools saves too little CPU to matter here (docs/performance.md).
        http=HTTP_IMPLEMENTATION,
        # wsproto without permessage-deflate: ~24 KiB per idle connection instead of 34-126
        # (measured, docs/performance.md); chat frames are small.
        # Aborts a connection whose client stopped reading instead of waiting on it.
        ws=AbortingWSProtocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.realtime.max_frame_bytes,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal, which would
    # end the process as "killed" (status 143); a requested stop that completed is a success.
    signal.signal(signal.SIGTERM, _stopped)
    DrainingServer(config, application).run()


@app.command()
@operator_errors
def migrate() -> None:
    """Apply database migrations (Alembic) up to the newest."""
    settings = load_settings()
    run(_migrate(settings))
    typer.echo("cmschat: database is up to date")


def main() -> None:
    """Entry point of the ``cmschat`` console script."""
    try:
        status = app(standalone_mode=False)
    except (typer.TyperException, click.ClickException) as exc:
        # Usage mistakes (unknown option, bad choice) get the same one-line error as every
        # other operator mistake, instead of a multi-line box. Typer has already shown the
        # help for a bare group (NoArgsIsHelpError).
        if type(exc).__name__ != "NoArgsIsHelpError":
            message = " ".join(exc.format_message().replace("Value error, ", "").split())
            context = getattr(exc, "ctx", None)
            if context is not None:
                message += f" (see: {context.command_path} --help)"
            typer.echo(f"cmschat: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, click.Abort):
        typer.echo("cmschat: error: aborted", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
