"""Opaque bearer tokens: 256 random bits for the client, an HMAC of them for the database."""

from __future__ import annotations

import hmac
import secrets

TOKEN_BYTES = 32  # 256 bits
MAX_TOKEN_LENGTH = 128


def new_token() -> str:
    """A fresh token for a client."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str, *, key: bytes) -> str:
    """The stored form of a token: a database dump alone cannot be replayed or checked."""
    # The one-shot form: the same HMAC-SHA256, without the Python object hmac.new makes.
    return hmac.digest(key, token.encode("utf-8"), "sha256").hex()
