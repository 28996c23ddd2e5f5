"""Signing in: an attempt is counted before the password check; trusted devices; records.

Budgets (per window of ``failure_window_seconds``), after OWASP's device-cookie scheme:

- a client presenting a valid device token for the username (it signed in there before)
  spends only that device's budget (``max_failures_per_device``);
- any other client spends the account's budget for unknown clients
  (``max_failures_per_account``) and its address's (``max_failures_per_address``).

So a stranger who exhausts an account's or an address's budget does not lock the owner
out of a device they signed in from before, and a device that guesses too often is locked
by itself. Throttled requests are recorded once per key and window, not once each.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from cmschat.accounts.auth import Client, DummyHash
from cmschat.accounts.devices import device_key, issue_device_token, trusted_device
from cmschat.accounts.models import AuthToken, LoginAttempt, User
from cmschat.accounts.passwords import verify_password
from cmschat.accounts.ratelimit import FailureCounter, Limit, Taken
from cmschat.accounts.service import normalise_username
from cmschat.accounts.tokens import new_token, token_digest
from cmschat.audit import service as audit
from cmschat.clock import Clock
from cmschat.db.actors import ANONYMOUS, user_actor
from cmschat.db.session import Database
from cmschat.errors import RateLimited, Unauthorized
from cmschat.settings import AuthSettings

WRONG_CREDENTIALS = "wrong username or password"
# Real usernames are at most 32 characters; a longer name typed is cut (and marked).
RECORDED_NAME_LENGTH = 32


@dataclass(frozen=True)
class NewSignIn:
    """A sign-in just made: the bearer token (shown once), its row, its user, and the
    device token the client keeps for its next logins."""

    token: str
    row: AuthToken
    user: User
    device_token: str


def recorded_username(typed: str) -> str:
    """The form of an unauthenticated, attacker-chosen username that may be recorded.

    NFKC, lower case, no control or invisible formatting characters, at most 32
    characters: a real username comes out unchanged.
    """
    name = unicodedata.normalize("NFKC", typed).strip().lower()
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    if len(name) > RECORDED_NAME_LENGTH:
        return name[: RECORDED_NAME_LENGTH - 1] + "…"
    return name


def address_bucket(address: str | None) -> str:
    """Whose budget an address spends: an IPv4 address, or an IPv6 address's /64.

    One IPv6 subscriber usually holds a whole /64, so counting single addresses there
    would give them billions of budgets.
    """
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def login_limits(
    *, name: str, device_id: str | None, address: str | None, policy: AuthSettings
) -> list[Limit]:
    """The budgets a login attempt spends: its trusted device's, or account's and address's."""
    if device_id is not None:
        return [Limit(f"device:{name}:{device_id}", policy.max_failures_per_device)]
    return [
        Limit(f"account:{name}", policy.max_failures_per_account),
        Limit(f"address:{address_bucket(address)}", policy.max_failures_per_address),
    ]


async def login(
    db: Database,
    *,
    username: str,
    password: str,
    device_token: str | None,
    client: Client,
    policy: AuthSettings,
    counter: FailureCounter,
    dummy_hash: DummyHash,
    token_key: bytes,
    clock: Clock,
) -> NewSignIn:
    """Check credentials and open a session; failures are counted before bcrypt runs.

    Owns its transactions (it takes the Database): the password check costs a quarter
    second of CPU and must not hold a transaction open meanwhile (on SQLite that would
    hold the one connection and stall every other request); and a refused attempt is
    recorded in a transaction of its own, since the refusal itself is an error.
    """
    name = normalise_username(username)
    now = clock.now()
    devices = device_key(token_key)
    device_id = trusted_device(
        device_token,
        username=name,
        key=devices,
        now=now,
        max_age=timedelta(days=policy.device_token_days),
    )
    limits = login_limits(name=name, device_id=device_id, address=client.address, policy=policy)
    # The attempt is counted first, atomically: parallel guesses cannot all pass a check
    # made before any of them is recorded.
    taken = await counter.take(limits, window=policy.failure_window_seconds)
    if not taken.allowed:
        if taken.throttling_started:
            await _record_throttled(db, name, client, taken)
        raise RateLimited("too many failed logins; try again later", retry_after=taken.retry_after)

    try:
        async with db.unit_of_work(ANONYMOUS) as session:
            user = await session.scalar(select(User).where(User.username == name))
    except Exception:
        # The database failed before any password was checked: a try that did not happen
        # must not count towards locking the owner out.
        for spent in limits:
            await counter.refund(spent.key)
        raise
    stored = user.password_hash if user else await dummy_hash.get(policy.bcrypt_rounds)
    matches = await verify_password(password, stored)
    if user is None or not matches or not user.is_active:
        reason = "disabled" if user is not None and matches else "bad_credentials"
        await _record_failure(db, name, user, client, reason=reason)
        raise Unauthorized(WRONG_CREDENTIALS, code="bad_credentials")

    # The owner proved the password: this client's budget is whole again. A success on a
    # trusted device leaves the budget for unknown clients alone, or the owner signing in
    # would hand a stranger a fresh one.
    await counter.reset(limits[0].key)
    for spent in limits[1:]:
        await counter.refund(spent.key)
    token = new_token()
    row = AuthToken(
        user_id=user.id,
        token_hash=token_digest(token, key=token_key),
        expires_at=now + timedelta(hours=policy.token_absolute_hours),
        last_used_at=now,
        client_address=client.address,
        user_agent=(client.user_agent or "")[:255] or None,
    )
    async with db.unit_of_work(user_actor(user.id), actor_name=user.username) as session:
        session.add(row)
        session.add(_attempt(name, user, client, succeeded=True, reason="ok"))
        audit.record(session, action="auth.login", target_type="user", target_id=user.id)
    device = issue_device_token(username=name, key=devices, now=now, device_id=device_id)
    return NewSignIn(token=token, row=row, user=user, device_token=device)


async def _record_failure(
    db: Database, name: str, user: User | None, client: Client, *, reason: str
) -> None:
    # Whoever failed to sign in is not (yet) the account's owner: the attempt is anonymous.
    async with db.unit_of_work(ANONYMOUS) as session:
        session.add(_attempt(name, user, client, succeeded=False, reason=reason))
        audit.record(
            session,
            action="auth.login_failed",
            target_type="user",
            target_id=user.id if user is not None else None,
            changes={"username": recorded_username(name), "reason": reason},
        )


async def _record_throttled(db: Database, name: str, client: Client, taken: Taken) -> None:
    """One record when a key starts being throttled; later refusals in its window only count."""
    async with db.unit_of_work(ANONYMOUS) as session:
        user = await session.scalar(select(User).where(User.username == name))
        session.add(_attempt(name, user, client, succeeded=False, reason="rate_limited"))
        audit.record(
            session,
            action="auth.login_throttled",
            target_type="user",
            target_id=user.id if user is not None else None,
            changes={
                "username": recorded_username(name),
                "scope": sorted({key.split(":", 1)[0] for key in taken.blocked}),
                "retry_after": taken.retry_after,
            },
        )


def _attempt(
    name: str, user: User | None, client: Client, *, succeeded: bool, reason: str
) -> LoginAttempt:
    return LoginAttempt(
        username=recorded_username(name),
        user_id=user.id if user else None,
        succeeded=succeeded,
        reason=reason,
        client_address=client.address,
        user_agent=(client.user_agent or "")[:255] or None,
    )
