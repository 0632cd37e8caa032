"""Logging in with bad credentials, for real: wrong password, wrong or reused TOTP code,
lockout after repeated failures and its admin unlock, per-address throttling, and bad,
expired or logged-out bearer tokens. Each refusal is clear, names no factor, is audited,
and leaves every other user and connection alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.client import HelplineClient
from protocol.errors import AuthError, ErrorCode, TooManyAttempts

from .conftest import RelayProcess, async_wait_for, init_relay, run_helpline, totp_now
from .helpers import NewUser, api, audit_entries, cli_login, new_user

GENERIC = "invalid username, password or one-time code"


def wrong_code(secret: str) -> str:
    """A six-digit code that is valid for none of the steps the relay accepts now."""
    valid = {totp_now(secret, step_offset=offset) for offset in (-1, 0, 1, 2)}
    code = int(totp_now(secret))
    while f"{code:06d}" in valid:
        code = (code + 1) % 1_000_000
    return f"{code:06d}"


async def login_status(
    relay: RelayProcess, username: str, password: str, otp: str
) -> tuple[int, dict[str, Any]]:
    body = {"username": username, "password": password, "otp": otp}
    return await api(relay, "POST", "/api/v1/login", body=body)


async def reasons(admin: HelplineClient, action: str, username: str) -> list[str]:
    return [
        e["details"].get("reason", "")
        for e in await audit_entries(admin, action=action, target=username)
    ]


async def test_wrong_password_wrong_code_and_reused_code_are_refused_alike(
    relay: RelayProcess, admin_client: HelplineClient
) -> None:
    alice = await new_user(admin_client, "alice")
    bob = await new_user(admin_client, "bob")

    attempts = {
        "unknown user": ("nobody", alice.password, alice.code()),
        "wrong password": ("alice", alice.password + "x", alice.code()),
        "wrong one-time code": ("alice", alice.password, wrong_code(alice.totp_secret)),
        "missing one-time code": ("alice", alice.password, ""),
    }
    bodies = []
    for what, (username, password, otp) in attempts.items():
        status, body = await login_status(relay, username, password, otp)
        assert status == 401, (what, body)
        bodies.append(body)

    # A code works once: the same code again is refused, like any other wrong code.
    code = alice.code()
    async with HelplineClient(relay.url, relay.ca_pem) as first:
        await first.login("alice", alice.password, code)
        status, body = await login_status(relay, "alice", alice.password, code)
        assert status == 401, body
        bodies.append(body)
        # The session that used the code first is unaffected.
        assert (await first.me())["username"] == "alice"

    # One message for every cause: it never tells which factor was wrong.
    assert all(b == {"error": {"code": ErrorCode.AUTH_FAILED, "message": GENERIC}} for b in bodies)
    assert await reasons(admin_client, "user.login_failed", "alice") == [
        "wrong password",
        "wrong one-time code",
        "wrong one-time code",
        "one-time code reused",
    ]
    assert await reasons(admin_client, "user.login_failed", "nobody") == ["unknown user"]
    failed = await audit_entries(admin_client, action="user.login_failed")
    assert all(e["details"]["address"] == "127.0.0.1" for e in failed)
    assert not any(alice.password in json.dumps(e) for e in failed)

    # Alice is not locked out (a success in between reset her count), the next step's code
    # is a new code and works; bob and the admin never noticed anything.
    async with HelplineClient(relay.url, relay.ca_pem) as second:
        await second.login("alice", alice.password, alice.code(step_offset=1))
        assert (await second.me())["username"] == "alice"
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login("bob", bob.password, bob.code())
        assert (await client.me())["username"] == "bob"
    assert (await admin_client.me())["role"] == "admin"
    assert len(await audit_entries(admin_client, action="user.login", target="alice")) == 2
    assert (await admin_client.verify_audit()).ok


async def test_lockout_after_five_failures_until_an_admin_unlocks(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    alice = await new_user(admin_client, "alice")
    bob = await new_user(admin_client, "bob")
    ops = await new_user(admin_client, "ops", role="admin", totp_required=False)

    for _ in range(5):
        status, body = await login_status(relay, "alice", "not her password", alice.code())
        assert status == 401
        assert body["error"]["message"] == GENERIC

    # Locked: even the right password and a fresh code are refused, with the answer of
    # any failure (a locked account must not tell that it exists).
    status, body = await login_status(relay, "alice", alice.password, alice.code())
    assert (status, body) == (401, {"error": {"code": ErrorCode.AUTH_FAILED, "message": GENERIC}})
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        with pytest.raises(AuthError) as refused:
            await client.login("alice", alice.password, alice.code())
        assert not isinstance(refused.value, TooManyAttempts)

    locked = await audit_entries(admin_client, action="user.locked", target="alice")
    assert len(locked) == 1
    assert locked[0]["details"]["failures"] == 5
    assert len(await audit_entries(admin_client, action="user.login_failed", target="alice")) == 5
    assert await reasons(admin_client, "user.login_refused", "alice") == [
        "account locked",
        "account locked",
    ]
    users = {u["username"]: u for u in await admin_client.users()}
    assert users["alice"]["locked_until"] is not None
    assert users["bob"]["locked_until"] is None

    # Another user logs in meanwhile without trouble.
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login("bob", bob.password, bob.code())
        assert (await client.me())["username"] == "bob"

    # Guesses fired in parallel are counted before their password is checked: of a burst
    # of eight, exactly five are checked and the account locks; the rest are refused as
    # locked, with the same answer.
    carol = await new_user(admin_client, "carol")
    answers = await asyncio.gather(
        *(login_status(relay, "carol", f"guess number {n}", carol.code()) for n in range(8))
    )
    assert [status for status, _ in answers] == [401] * 8
    assert all(body["error"]["message"] == GENERIC for _, body in answers)
    status, body = await login_status(relay, "carol", carol.password, carol.code())
    assert status == 401, body
    failed = await audit_entries(admin_client, action="user.login_failed", target="carol")
    assert [e["details"]["reason"] for e in failed] == ["wrong password"] * 5
    assert await reasons(admin_client, "user.login_refused", "carol") == ["account locked"] * 4
    assert len(await audit_entries(admin_client, action="user.locked", target="carol")) == 1

    # An admin unlocks alice with the CLI; then her password and code work again.
    config = tmp_path / "ops-cli"
    cli_login(relay, config, "ops", ops.password, "")
    result = run_helpline(config, "admin", "users", "unlock", "alice")
    assert result.returncode == 0, result.stderr
    assert "unlocked alice" in result.stdout
    assert len(await audit_entries(admin_client, action="user.unlock", target="alice")) == 1
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login("alice", alice.password, alice.code())
        assert (await client.me())["username"] == "alice"
    assert (await admin_client.verify_audit()).ok


async def test_address_is_throttled_after_twenty_failures(
    relay: RelayProcess, admin_client: HelplineClient
) -> None:
    alice = await new_user(admin_client, "alice")
    # Twenty failures, each for a different account: no single account reaches its lockout.
    answers = await asyncio.gather(
        *(login_status(relay, f"guess-{n}", "password123456", "123456") for n in range(20))
    )
    for status, body in answers:
        assert (status, body["error"]["message"]) == (401, GENERIC)

    # From now on this address is refused, however right the credentials.
    status, body = await login_status(relay, "alice", alice.password, alice.code())
    assert status == 429
    assert body["error"]["code"] == ErrorCode.TOO_MANY_ATTEMPTS
    assert "address" in body["error"]["message"]
    throttled = await audit_entries(admin_client, action="user.login_throttled")
    assert [(e["target"], e["details"]["address"]) for e in throttled] == [("alice", "127.0.0.1")]
    assert len(await audit_entries(admin_client, action="user.login_failed")) == 20
    # It is the address, not alice's account, that is held back.
    users = {u["username"]: u for u in await admin_client.users()}
    assert users["alice"]["locked_until"] is None
    assert not await audit_entries(admin_client, action="user.locked")

    # Sessions opened before keep working.
    assert (await admin_client.me())["username"] == relay.admin["username"]
    assert await admin_client.devices() == []
    assert (await admin_client.verify_audit()).ok


async def test_bad_and_logged_out_tokens_are_refused(
    relay: RelayProcess, admin_client: HelplineClient
) -> None:
    alice = await new_user(admin_client, "alice")

    status, body = await api(relay, "GET", "/api/v1/me")
    assert (status, body["error"]) == (
        401,
        {"code": ErrorCode.AUTH_FAILED, "message": "authentication required"},
    )
    status, body = await api(relay, "GET", "/api/v1/devices", token="hl_" + "A" * 43)
    assert status == 401
    assert body["error"]["message"] == "invalid or revoked token; log in again"

    async with (
        HelplineClient(relay.url, relay.ca_pem) as laptop,
        HelplineClient(relay.url, relay.ca_pem) as desktop,
    ):
        await laptop.login("alice", alice.password, alice.code())
        await desktop.login("alice", alice.password, alice.code(step_offset=1))
        old_token = laptop.token
        assert old_token is not None
        await laptop.logout()

        status, body = await api(relay, "GET", "/api/v1/me", token=old_token)
        assert status == 401
        assert body["error"]["message"] == "invalid or revoked token; log in again"
        laptop.token = old_token
        with pytest.raises(AuthError, match="log in again"):
            await laptop.me()
        # Her other login, and everyone else's, still stand.
        assert (await desktop.me())["username"] == "alice"
        assert (await admin_client.me())["role"] == "admin"

    assert len(await audit_entries(admin_client, action="user.logout", target="alice")) == 1


@pytest.fixture
def short_token_relay(tmp_path: Path) -> Iterator[tuple[RelayProcess, NewUser]]:
    """A relay whose bearer tokens live two seconds."""
    relay = init_relay(tmp_path)
    toml = relay.data_dir / "relay.toml"
    toml.write_text(toml.read_text().replace("token_lifetime = 43200", "token_lifetime = 2"))
    relay.start()
    admin = NewUser(
        relay.admin["username"], relay.admin["password"], relay.admin["totp_secret"], "admin"
    )
    try:
        yield relay, admin
    finally:
        relay.stop()


async def test_expired_token_is_refused_with_a_clear_message(
    short_token_relay: tuple[RelayProcess, NewUser],
) -> None:
    relay, admin = short_token_relay
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        body = await client.login(admin.username, admin.password, admin.code())
        token = body["token"]

        async def expired() -> bool:
            status, answer = await api(relay, "GET", "/api/v1/me", token=token)
            if status == 200:
                return False
            assert status == 401, answer
            assert answer["error"]["message"] == "token expired; log in again"
            return True

        await async_wait_for(expired, what="the token to expire")
        # Expired tokens are dropped: the same token is now simply unknown.
        status, answer = await api(relay, "GET", "/api/v1/me", token=token)
        assert status == 401
        assert answer["error"]["message"] == "invalid or revoked token; log in again"
        # Logging in again gives a working token.
        await client.login(admin.username, admin.password, admin.code(step_offset=1))
        assert (await client.me())["username"] == admin.username
