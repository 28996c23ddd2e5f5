"""Account commands: ``cmschat user create | list | disable | enable | reset-password``."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role, User
from cmschat.accounts.schemas import UserRead
from cmschat.cli_support import fail, open_database, operator_errors, require_database, run
from cmschat.db.actors import SYSTEM_CLI
from cmschat.db.session import Database
from cmschat.jsonbytes import is_text
from cmschat.realtime.broker import Broker
from cmschat.realtime.publish import publisher_for
from cmschat.redis_clients import redis_broker, redis_client
from cmschat.settings import Settings, load_settings

user_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="sign-in name")]


def _read_password() -> str:
    """The first line of stdin, without its line ending; refuse an empty one."""
    not_text = "the password on stdin is not valid UTF-8 text"
    try:
        password = sys.stdin.readline().rstrip("\r\n")
    except UnicodeDecodeError:  # stdin decoded strictly (a UTF-8 locale without UTF-8 mode)
        raise fail(not_text) from None
    if not password:
        raise fail("no password on stdin")
    if not is_text(password):
        raise fail(not_text)
    return password


@asynccontextmanager
async def _operator_session(
    settings: Settings, *, migrate: bool = False, broker: Broker | None = None
) -> AsyncIterator[tuple[AsyncSession, Database]]:
    """One unit of work as ``system:cli``, on an engine disposed of afterwards; its events
    go to ``broker`` once it has committed (none: dropped)."""
    publisher = None if broker is None else publisher_for(lambda: broker)
    async with (
        open_database(settings, migrate=migrate, publisher=publisher) as db,
        db.unit_of_work(SYSTEM_CLI) as session,
    ):
        yield session, db


@asynccontextmanager
async def _broker(settings: Settings) -> AsyncIterator[Broker | None]:
    """Redis, when configured, to tell running servers to close a user's sockets at once."""
    if not settings.redis_url:
        # One embedded instance: its periodic session check closes the sockets, within
        # CMSCHAT_REALTIME__SESSION_CHECK_SECONDS.
        yield None
        return
    redis = redis_client(settings)
    broker = redis_broker(settings, redis)
    try:
        yield broker
    finally:
        await broker.close()
        await redis.aclose()


async def _create_user(settings: Settings, **fields: Any) -> None:
    # Migrated first: scripted set-up may come before the first serve.
    async with _operator_session(settings, migrate=True) as (session, db):
        await accounts.create_user(
            session, bcrypt_rounds=settings.auth.bcrypt_rounds, clock=db.clock, **fields
        )


@user_app.command("create")
@operator_errors
def user_create(
    username: Annotated[str, typer.Argument(help="sign-in name (3-32 of a-z 0-9 . _ -)")],
    role: Annotated[Role, typer.Option(help="member, agent or admin")] = Role.member,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="read the password from the first line of stdin"),
    ] = False,
    display_name: Annotated[str | None, typer.Option(help="name shown to others")] = None,
) -> None:
    """Create an account; without --password-stdin a one-time password is generated and shown."""
    settings = load_settings()
    password = _read_password() if password_stdin else accounts.generate_password()
    run(
        _create_user(
            settings,
            username=username,
            role=role,
            password=password,
            display_name=display_name,
            must_change_password=not password_stdin,
        )
    )
    typer.echo(f"cmschat: created {role.value} {accounts.normalise_username(username)!r}")
    if not password_stdin:
        typer.echo(f"  one-time password: {password} (must be changed at first sign-in)")


async def _list_users(settings: Settings, *, role: Role | None, everyone: bool) -> list[User]:
    users: list[User] = []
    cursor: str | None = None
    async with _operator_session(settings) as (session, _):
        # The admin API's listing, page by page; like it, not an audited read (the account
        # directory: tests/audit/test_coverage.py NOT_SENSITIVE_READS).
        while True:
            page, cursor = await accounts.list_users(
                session,
                role=role,
                is_active=None if everyone else True,
                cursor=cursor,
                limit=accounts.MAX_PAGE,
            )
            users.extend(page)
            if cursor is None:
                return sorted(users, key=lambda user: user.username)


def _table(users: list[User]) -> str:
    rows = [("USERNAME", "ROLE", "ACTIVE", "MUST CHANGE PASSWORD", "CREATED (UTC)")]
    rows += [
        (
            user.username,
            user.role.value,
            "yes" if user.is_active else "no",
            "yes" if user.must_change_password else "no",
            user.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for user in users
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@user_app.command("list")
@operator_errors
def user_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="a JSON list of user objects, for scripts")
    ] = False,
    role: Annotated[Role | None, typer.Option(help="only member, agent or admin")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="include disabled accounts")] = False,
) -> None:
    """List active accounts by username (--all: disabled ones too)."""
    settings = load_settings()
    require_database(settings)
    users = run(_list_users(settings, role=role, everyone=everyone))
    if as_json:
        shapes = [UserRead.model_validate(user).model_dump(mode="json") for user in users]
        typer.echo(json.dumps(shapes, ensure_ascii=False, indent=2))
    else:
        typer.echo(_table(users))


async def _set_active(settings: Settings, *, username: str, active: bool) -> None:
    async with (
        _broker(settings) as broker,
        _operator_session(settings, broker=broker) as (session, db),
    ):
        user = await accounts.get_user_by_name(session, username=username)
        await accounts.update_user(
            session,
            acting_user=None,
            user_id=user.id,
            changes={"is_active": active},
            clock=db.clock,
        )


@user_app.command("disable")
@operator_errors
def user_disable(username: Name) -> None:
    """Disable an account: it cannot sign in, and every session (and open socket) ends."""
    settings = load_settings()
    require_database(settings)
    run(_set_active(settings, username=username, active=False))
    typer.echo(f"cmschat: disabled {accounts.normalise_username(username)!r}")


@user_app.command("enable")
@operator_errors
def user_enable(username: Name) -> None:
    """Enable a disabled account again (it signs in anew)."""
    settings = load_settings()
    require_database(settings)
    run(_set_active(settings, username=username, active=True))
    typer.echo(f"cmschat: enabled {accounts.normalise_username(username)!r}")


async def _reset_password(settings: Settings, *, username: str, password: str | None) -> str | None:
    async with (
        _broker(settings) as broker,
        _operator_session(settings, broker=broker) as (session, db),
    ):
        user = await accounts.get_user_by_name(session, username=username)
        _, generated = await accounts.reset_password(
            session,
            acting_user=None,
            user_id=user.id,
            password=password,
            bcrypt_rounds=settings.auth.bcrypt_rounds,
            clock=db.clock,
        )
        return generated


@user_app.command("reset-password")
@operator_errors
def user_reset_password(
    username: Name,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="read the password from the first line of stdin"),
    ] = False,
) -> None:
    """Set a one-time password (generated unless --password-stdin); every session ends."""
    settings = load_settings()
    require_database(settings)
    password = _read_password() if password_stdin else None
    generated = run(_reset_password(settings, username=username, password=password))
    typer.echo(
        f"cmschat: reset the password of {accounts.normalise_username(username)!r}; "
        "every session ended"
    )
    if generated is not None:
        typer.echo(f"  one-time password: {generated} (must be changed at next sign-in)")
