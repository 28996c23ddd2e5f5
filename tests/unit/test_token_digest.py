"""The stored form of a token is HMAC-SHA256 in hex: every token in a database depends on it."""

from __future__ import annotations

from cmschat.accounts.tokens import token_digest


def test_a_tokens_digest_is_its_hmac_sha256_in_hex() -> None:
    # RFC 4231, test case 2.
    digest = token_digest("what do ya want for nothing?", key=b"Jefe")
    assert digest == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
