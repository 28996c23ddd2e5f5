"""Password policy and hashing.

bcrypt reads only the first 72 bytes of its input (24 Korean characters), so the
password is first reduced with HMAC-SHA-256 to a fixed 44-byte string: every character
counts and nothing is silently cut. Hashing runs in a worker thread (0.24 s of CPU at
cost 12), never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import cache
from importlib.resources import files

import anyio.to_thread
import bcrypt

from cmschat.errors import Invalid

MIN_LENGTH = 10
MAX_LENGTH = 128
MIN_DISTINCT = 4
# A fixed label, not a secret: it only makes the pre-hash specific to this use.
_PREHASH_KEY = b"cmschat.password.v1"
_SCHEME = "bcrypt-hmac-sha256$"


@cache
def _common_passwords() -> frozenset[str]:
    text = (files("cmschat.accounts") / "common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def check_password_policy(password: str, *, username: str, field: str = "password") -> None:
    """Raise Invalid (naming ``field``) unless the password is acceptable."""
    if len(password) < MIN_LENGTH:
        raise Invalid(
            f"password must be at least {MIN_LENGTH} characters", field=field, code="weak_password"
        )
    if len(password) > MAX_LENGTH:
        raise Invalid(
            f"password must be at most {MAX_LENGTH} characters", field=field, code="weak_password"
        )
    lowered = password.lower()
    if username and username.lower() in lowered:
        raise Invalid("password must not contain the username", field=field, code="weak_password")
    if lowered in _common_passwords() or len(set(password)) < MIN_DISTINCT:
        raise Invalid("password is too common; choose another", field=field, code="weak_password")


def _prehash(password: str) -> bytes:
    digest = hmac.new(_PREHASH_KEY, password.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def _hash_sync(password: str, rounds: int) -> str:
    hashed = bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds=rounds))
    return _SCHEME + hashed.decode("ascii")


def _verify_sync(password: str, stored: str) -> bool:
    if not stored.startswith(_SCHEME):
        return False
    return bcrypt.checkpw(_prehash(password), stored.removeprefix(_SCHEME).encode("ascii"))


async def hash_password(password: str, *, rounds: int) -> str:
    """The stored form of a password (in a worker thread)."""
    return await anyio.to_thread.run_sync(_hash_sync, password, rounds)


async def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (in a worker thread, constant-time compare)."""
    if len(password) > MAX_LENGTH:
        # Still spend the time, so a long guess is not a faster "no".
        password = password[:MAX_LENGTH]
        await anyio.to_thread.run_sync(_verify_sync, password, stored)
        return False
    return await anyio.to_thread.run_sync(_verify_sync, password, stored)


def bcrypt_cost(stored: str) -> int:
    """The cost factor a stored hash was made with."""
    return int(stored.removeprefix(_SCHEME).split("$")[2])
