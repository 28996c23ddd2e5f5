"""Device tokens: a stranger's guessing cannot lock the owner out of a device used before."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.support import PASSWORD, NamedUser, error_of

LOGIN = "/api/v1/auth/login"
OWNER = ("203.0.113.20", 5000)
STRANGER = ("198.51.100.77", 6000)


def client_at(app: FastAPI, address: tuple[str, int]) -> httpx.AsyncClient:
    """An HTTP client the app sees as coming from ``address``."""
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def sign_in(
    client: httpx.AsyncClient, password: str, device_token: str | None = None
) -> httpx.Response:
    """One login attempt as alice, with this client's device token if it has one."""
    body = {"username": "alice", "password": password}
    if device_token is not None:
        body["device_token"] = device_token
    return await client.post(LOGIN, json=body)


async def test_a_stranger_locks_unknown_clients_out_but_not_the_owners_device(
    app: FastAPI, alice: NamedUser, context: AppContext
) -> None:
    limit = context.settings.auth.max_failures_per_account
    async with client_at(app, OWNER) as owner, client_at(app, STRANGER) as stranger:
        device = (await sign_in(owner, PASSWORD)).json()["device_token"]
        for n in range(limit):
            assert (await sign_in(stranger, f"guess-{n:04}")).status_code == 401
        # The account is locked for clients it does not know, the owner's new ones included.
        assert (await sign_in(stranger, PASSWORD)).status_code == 429
        assert (await sign_in(owner, PASSWORD)).status_code == 429
        # The device alice signed in from before still gets in, and its token is renewed.
        again = await sign_in(owner, PASSWORD, device)
        assert again.status_code == 200
        renewed = again.json()["device_token"]
        assert (await sign_in(owner, PASSWORD, renewed)).status_code == 200
        # And the owner signing in gave the stranger no fresh budget.
        assert (await sign_in(stranger, PASSWORD)).status_code == 429


async def test_an_address_exhausted_by_a_stranger_still_lets_the_owners_device_in(
    app: FastAPI, alice: NamedUser, context: AppContext
) -> None:
    shared = ("192.0.2.44", 1000)  # one NAT: the owner and the stranger share the address
    async with client_at(app, shared) as owner, client_at(app, shared) as stranger:
        device = (await sign_in(owner, PASSWORD)).json()["device_token"]
        for n in range(context.settings.auth.max_failures_per_address):
            body = {"username": f"someone{n}", "password": "guess-0000"}
            assert (await stranger.post(LOGIN, json=body)).status_code == 401
        assert (await sign_in(owner, PASSWORD)).status_code == 429
        assert (await sign_in(owner, PASSWORD, device)).status_code == 200


async def test_a_trusted_device_that_guesses_too_often_is_locked_on_its_own(
    app: FastAPI, alice: NamedUser, context: AppContext, clock: FakeClock
) -> None:
    limit = context.settings.auth.max_failures_per_device
    async with client_at(app, OWNER) as laptop, client_at(app, OWNER) as phone:
        stolen = (await sign_in(laptop, PASSWORD)).json()["device_token"]
        mine = (await sign_in(phone, PASSWORD)).json()["device_token"]
        for n in range(limit):
            assert (await sign_in(laptop, f"guess-{n:04}", stolen)).status_code == 401
        locked = await sign_in(laptop, PASSWORD, stolen)
        assert locked.status_code == 429
        assert error_of(locked)["code"] == "rate_limited"
        assert int(locked.headers["Retry-After"]) > 0
        # Another device of the owner's, and the budget for unknown clients, are untouched.
        assert (await sign_in(phone, PASSWORD, mine)).status_code == 200
        assert (await sign_in(laptop, PASSWORD)).status_code == 200
        clock.advance(seconds=context.settings.auth.failure_window_seconds + 1)
        assert (await sign_in(laptop, PASSWORD, stolen)).status_code == 200


async def test_only_a_valid_unexpired_token_for_that_user_is_trusted(
    app: FastAPI, alice: NamedUser, bob: NamedUser, context: AppContext, clock: FakeClock
) -> None:
    limit = context.settings.auth.max_failures_per_account
    async with client_at(app, OWNER) as owner, client_at(app, STRANGER) as stranger:
        alices = (await sign_in(owner, PASSWORD)).json()["device_token"]
        bobs = (await stranger.post(LOGIN, json={"username": "bob", "password": PASSWORD})).json()[
            "device_token"
        ]
        for n in range(limit):
            await sign_in(stranger, f"guess-{n:04}")
        tampered = alices[:-2] + ("AA" if not alices.endswith("AA") else "BB")
        for token in (bobs, tampered, "d1.x.1.y", "garbage"):
            assert (await sign_in(stranger, PASSWORD, token)).status_code == 429, token
        assert (await sign_in(owner, PASSWORD, alices)).status_code == 200
        clock.advance(days=context.settings.auth.device_token_days + 1)
        # Tokens expire; by now the account's window has ended too, so lock it again.
        for n in range(limit):
            await sign_in(stranger, f"guess-{n:04}")
        assert (await sign_in(owner, PASSWORD, alices)).status_code == 429


async def test_login_without_a_device_token_keeps_the_contracts_shape(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    body = (await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})).json()
    assert {"access_token", "token_type", "expires_at", "user"} <= set(body)
    assert body["device_token"].startswith("d1.")
    assert "alice" not in body["device_token"]
