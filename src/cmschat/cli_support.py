"""What every ``cmschat`` command shares: one-line errors and running async steps."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, OperationalError

from cmschat.errors import CmschatError

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

    return wrapper


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one async step of a command."""
    return asyncio.run(coroutine)
