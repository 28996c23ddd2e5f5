"""Device tokens: proof that a client signed in to an account before (OWASP device cookies).

After a successful login the client gets a token it presents on later logins. A client
with a valid token for the username it signs in as is *trusted*: its failures count on a
budget of its own, so a stranger who exhausts the account's budget for unknown clients
cannot lock the owner out of the devices they already use.

The token is stateless: ``d1.<device id>.<issued at>.<mac>``, where the MAC is an
HMAC-SHA-256 over the username, device id and time, keyed with a key derived from
``CMSCHAT_SECRET_KEY``. Nothing is stored; the username is not in the token (only bound by
the MAC), so a token reveals nothing. It grants no access by itself, only a separate
failure budget.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

VERSION = "d1"
MAX_DEVICE_TOKEN_LENGTH = 200
_LABEL = b"cmschat.device-token.v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def device_key(secret: bytes) -> bytes:
    """The MAC key for device tokens, derived so it serves no other purpose."""
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, username: str, device_id: str, issued: int) -> str:
    message = f"{VERSION}|{username}|{device_id}|{issued}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def issue_device_token(
    *, username: str, key: bytes, now: datetime, device_id: str | None = None
) -> str:
    """A token for ``username``'s client: a new device, or ``device_id`` renewed."""
    device = device_id or _b64(secrets.token_bytes(16))
    issued = int(now.timestamp())
    return f"{VERSION}.{device}.{issued}.{_mac(key, username, device, issued)}"


def trusted_device(
    token: str | None, *, username: str, key: bytes, now: datetime, max_age: timedelta
) -> str | None:
    """The device id if ``token`` is a valid, unexpired token for ``username``; else None."""
    if not token or len(token) > MAX_DEVICE_TOKEN_LENGTH:
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not (parts[2].isascii() and parts[2].isdigit()):
        return None
    _, device, issued_text, mac = parts
    issued = int(issued_text)
    if not hmac.compare_digest(mac, _mac(key, username, device, issued)):
        return None
    age = now.timestamp() - issued
    if age < 0 or age > max_age.total_seconds():
        return None
    return device
