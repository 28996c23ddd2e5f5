"""Opaque bearer tokens: 256 random bits for the client, an HMAC of them for the database."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32  # 256 bits
MAX_TOKEN_LENGTH = 128


def new_token() -> str:
    """A fresh token for a client."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str, *, key: bytes) -> str:
    """The stored form of a token: a database dump alone cannot be replayed or checked."""
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()
