"""The ``cmschat`` command: serve and migrate; account commands live in ``cli_users``,
operations commands in ``cli_operations``, what all commands share in ``cli_support``."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import click
import typer

from cmschat.accounts import service as accounts
from cmschat.cli_backup import backup_app
from cmschat.cli_operations import audit_app, retention_app
from cmschat.cli_server import serve_process
from cmschat.cli_signals import stops_deferred
from cmschat.cli_support import open_database, operator_errors, run
from cmschat.cli_users import user_app
from cmschat.cli_workers import resolve_workers, serve_workers, warn_if_over_budget
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.db.migrate import run_migrations
from cmschat.settings import Settings, load_settings

log = logging.getLogger("cmschat.server")

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


async def _migrate(settings: Settings) -> list[str]:
    async with open_database(settings) as db:
        return await run_migrations(db.engine)


async def _prepare_first_run(settings: Settings, workers: int) -> str | None:
    async with open_database(settings, migrate=True) as db:
        if workers > 1:
            await warn_if_over_budget(db.engine, workers, settings.database)
        async with db.unit_of_work(SYSTEM_SETUP) as session:
            return await accounts.ensure_first_admin(
                session, bcrypt_rounds=settings.auth.bcrypt_rounds, clock=db.clock
            )


@app.command()
@operator_errors
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            show_default=False,
            help="worker processes (default CMSCHAT_WORKERS: auto, one per core on MariaDB "
            "with Redis, one on SQLite)",
        ),
    ] = None,
) -> None:
    """Migrate the database if needed, then serve the API, WebSocket and web client."""
    from cmschat.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    # Checked before migrating: a refused worker count changes nothing.
    count = resolve_workers(settings.workers if workers is None else workers, settings)
    with stops_deferred() as stop:
        password = run(_prepare_first_run(settings, count))
    if password is not None:
        # Printed once to the terminal, never logged: it is a secret.
        typer.echo(
            "\ncmschat: created the first admin account.\n"
            f"  username: {accounts.FIRST_ADMIN}\n"
            f"  one-time password: {password}\n"
            "Sign in and change it now; it will not be shown again.\n"
        )
        sys.stdout.flush()
    if stop.signal is not None:
        log.info("stopped by %s before serving; the database is prepared", stop.signal.name)
        return
    if count == 1:
        serve_process(settings, host=host, port=port)
    else:
        serve_workers(settings, count=count, host=host, port=port)


@app.command()
@operator_errors
def migrate() -> None:
    """Apply database migrations (Alembic) up to the newest."""
    settings = load_settings()
    with stops_deferred():
        # A stop asked for meanwhile ends the command as it would have ended anyway.
        newer = run(_migrate(settings))
    if newer:
        typer.echo(
            f"cmschat: database schema {', '.join(newer)} is newer than this cmschat; "
            "left as it is (a newer release migrated it)"
        )
    else:
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
