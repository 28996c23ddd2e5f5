"""What every ``cmschat`` command shares: one-line errors, async steps, opening the database."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from cmschat.audit.service import audited
from cmschat.clock import SystemClock
from cmschat.db.migrate import is_migrated, run_migrations
from cmschat.db.session import Database, create_engine
from cmschat.errors import CmschatError
from cmschat.events import Publisher
from cmschat.settings import Settings

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    """Print one line to stderr; the caller raises the returned Exit."""
    typer.echo(f"cmschat: error: {message}", err=True)
    return typer.Exit(1)


def operator_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn the mistakes an operator can make into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except CmschatError as exc:
            raise fail(exc.message) from None
        except (OperationalError, DBAPIError) as exc:
            raise fail(f"database: {str(exc.orig).strip() or type(exc.orig).__name__}") from None
        except OSError as exc:
            raise fail(str(exc)) from None
        except UnicodeEncodeError:
            # Invalid UTF-8 in an argument arrives as lone surrogates: fine in a file's
            # path, refused by the database and by JSON (a name, say), never half stored.
            raise fail("an argument is not valid UTF-8 text") from None

    return wrapper


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one async step of a command."""
    return asyncio.run(coroutine)


@asynccontextmanager
async def open_database(
    settings: Settings, *, migrate: bool = False, publisher: Publisher | None = None
) -> AsyncIterator[Database]:
    """The configured database for one command, its connections closed when the command ends.

    ``migrate``: bring the schema up to date first (``migrate``, ``serve``, ``user create``).
    ``publisher``: where committed units of work send their events (none: dropped).
    Units of work are the command's to open, each with its own actor; they keep the audit
    trail.
    """
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database.pool_size,
        pool_overflow=settings.database.pool_overflow,
        pool_timeout=settings.database.pool_timeout,
    )
    try:
        if migrate:
            await run_migrations(engine)
        yield audited(Database(engine, SystemClock(), publisher=publisher))
    finally:
        await engine.dispose()


# MariaDB's "Unknown database" error number.
ER_BAD_DB_ERROR = 1049
MIGRATE_FIRST = "run `cmschat migrate` first, or point CMSCHAT_DATABASE_URL at your database"


async def _check_schema(settings: Settings) -> None:
    url = make_url(settings.database_url)
    try:
        async with open_database(settings) as db:
            migrated = await is_migrated(db.engine)
    except OperationalError as exc:
        if exc.orig is not None and exc.orig.args and exc.orig.args[0] == ER_BAD_DB_ERROR:
            raise CmschatError(
                f"no cmschat database {url.database!r} on {url.host}: "
                f"create it, then {MIGRATE_FIRST}"
            ) from None
        raise
    if not migrated:
        raise CmschatError(f"no cmschat tables in the database {url.database!r}: {MIGRATE_FIRST}")


def require_database(settings: Settings) -> None:
    """Refuse, creating nothing, to run a command that needs data on a database that has none.

    Commands that read or change existing data call this first; ``serve`` and ``migrate``
    (and ``user create``, for scripted set-up) create the database instead.
    """
    url = make_url(settings.database_url)
    path = url.database
    # Checked before any engine exists: opening SQLite would create the file (and the
    # engine its directory), leaving an empty database behind in whatever cwd this is.
    if (
        url.get_backend_name() == "sqlite"
        and path
        and path != ":memory:"
        and not Path(path).is_file()
    ):
        raise fail(f"no cmschat database at {Path(path).absolute()}: {MIGRATE_FIRST}")
    run(_check_schema(settings))
