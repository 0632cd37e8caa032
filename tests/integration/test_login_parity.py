"""A login tells nothing about the account: unknown, disabled, locked, wrong password and
wrong code get the same status and body after the same work (one argon2id verification,
so similar timing), and the password checks an unauthenticated client can start are
bounded: a few at once, a bounded queue, "busy" (429) past it, counted against nobody.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from certs.contexts import pinned_client_context
from console.client import HelplineClient
from protocol.errors import ErrorCode

from .conftest import RelayProcess, init_relay, totp_now
from .helpers import audit_entries, new_user
from .test_auth import wrong_code

pytestmark = pytest.mark.integration

GENERIC = {
    "error": {
        "code": ErrorCode.AUTH_FAILED,
        "message": "invalid username, password or one-time code",
    }
}
BUSY = {
    "error": {
        "code": ErrorCode.TOO_MANY_ATTEMPTS,
        "message": "the relay is busy checking other logins; try again in a few seconds",
    }
}
ROUNDS = 4  # per kind of failure: one short of the lockout threshold
MAX_RATIO = 3.0
PEAK = re.compile(r"password checks: at most (\d+) at once \(bound (\d+), (\d+) may wait\); (\d+)")


def relay_with(tmp_path: Path, **auth: int) -> RelayProcess:
    process = init_relay(tmp_path)
    toml = process.data_dir / "relay.toml"
    text = toml.read_text().replace("address_failures = 20", "address_failures = 1000")
    for key, value in auth.items():
        text = re.sub(rf"^{key} = \d+$", f"{key} = {value}", text, flags=re.MULTILINE)
    toml.write_text(text)
    process.start()
    return process


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = relay_with(tmp_path)
    try:
        yield process
    finally:
        process.stop()


class Logins:
    """Logins over one kept-alive TLS connection each, timed."""

    def __init__(self, relay: RelayProcess, connections: int = 1) -> None:
        self.relay = relay
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=connections, ssl=pinned_client_context(relay.ca_pem)
            )
        )

    async def warm(self, count: int = 1) -> None:
        async def one() -> None:
            async with self.session.get(self.relay.url + "/api/v1/health") as response:
                assert response.status == 200

        await asyncio.gather(*(one() for _ in range(count)))

    async def login(self, username: str, password: str, otp: str) -> tuple[int, Any, float]:
        body = {"username": username, "password": password, "otp": otp}
        started = time.perf_counter()
        async with self.session.post(self.relay.url + "/api/v1/login", json=body) as response:
            answer = await response.json(content_type=None)
        return response.status, answer, time.perf_counter() - started

    async def close(self) -> None:
        await self.session.close()


def peak_line(relay: RelayProcess) -> tuple[int, int, int, int]:
    found = PEAK.findall(relay.log())
    assert found, "the relay logs its password checks' peak when it stops"
    peak, bound, queue, busy = (int(n) for n in found[-1])
    return peak, bound, queue, busy


async def test_every_refused_login_answers_alike_after_the_same_work(
    relay: RelayProcess, admin_client: HelplineClient
) -> None:
    disabled = await new_user(admin_client, "dora")
    await admin_client.update_user("dora", disabled=True)
    locked = await new_user(admin_client, "lola")
    carol = await new_user(admin_client, "carol")
    dave = await new_user(admin_client, "dave")
    logins = Logins(relay)
    try:
        await logins.warm()
        for _ in range(5):  # lola's lockout
            status, _, _ = await logins.login("lola", "not her password", locked.code())
            assert status == 401
        users = {u["username"]: u for u in await admin_client.users()}
        assert users["lola"]["locked_until"] is not None

        # The right password of each account where it has one: only the account's state
        # (or the code) is wrong.
        kinds: dict[str, tuple[str, str, str]] = {
            "unknown": ("nobody", carol.password, carol.code()),
            "disabled": ("dora", disabled.password, disabled.code()),
            "locked": ("lola", locked.password, locked.code()),
            "wrong password": ("carol", carol.password + "x", carol.code()),
            "wrong code": ("dave", dave.password, wrong_code(dave.totp_secret)),
        }
        timings: dict[str, list[float]] = {kind: [] for kind in kinds}
        answers = []
        for _ in range(ROUNDS):
            for kind, attempt in kinds.items():
                status, body, seconds = await logins.login(*attempt)
                answers.append((kind, status, body))
                timings[kind].append(seconds)
    finally:
        await logins.close()

    assert [(k, s, b) for k, s, b in answers if (s, b) != (401, GENERIC)] == []
    medians = {kind: statistics.median(values) for kind, values in timings.items()}
    ratio = max(medians.values()) / min(medians.values())
    print("login medians (ms):", {k: round(v * 1000, 1) for k, v in medians.items()})
    print(f"slowest/fastest: {ratio:.2f}")
    assert ratio <= MAX_RATIO, medians

    # The audit log, and only it, tells the causes apart.
    reasons = [
        (e["target"], e["details"]["reason"])
        for e in await audit_entries(admin_client)
        if e["action"] in ("user.login_failed", "user.login_refused")
    ]
    assert reasons.count(("dora", "account disabled")) == ROUNDS
    assert reasons.count(("lola", "account locked")) == ROUNDS
    assert reasons.count(("nobody", "unknown user")) == ROUNDS
    assert reasons.count(("carol", "wrong password")) == ROUNDS
    assert reasons.count(("dave", "wrong one-time code")) == ROUNDS
    # Nobody else was harmed: carol and dave still log in (four failures each, no lock).
    for user in (carol, dave):
        async with HelplineClient(relay.url, relay.ca_pem) as client:
            await client.login(user.username, user.password, user.code(step_offset=1))
    assert (await admin_client.me())["username"] == relay.admin["username"]

    relay.stop()
    peak, bound, _, _ = peak_line(relay)
    print(f"password checks at once: at most {peak} (bound {bound})")
    assert 1 <= peak <= bound


async def burst(logins: Logins, count: int) -> list[tuple[int, Any, float]]:
    return list(
        await asyncio.gather(
            *(logins.login(f"guess-{n}", "password123456", "123456") for n in range(count))
        )
    )


async def test_password_checks_are_bounded_and_busy_past_the_queue(tmp_path: Path) -> None:
    """One check at a time and one waiting: of a burst of 24 logins on open connections,
    the rest are told the relay is busy (429), and those are counted against nobody."""
    relay = relay_with(tmp_path, password_checks=1, password_queue=1, address_failures=25)
    try:
        async with HelplineClient(relay.url, relay.ca_pem) as admin:
            code = totp_now(relay.admin["totp_secret"])
            await admin.login(relay.admin["username"], relay.admin["password"], code)
            alice = await new_user(admin, "alice")
            logins = Logins(relay, connections=24)
            try:
                await logins.warm(24)
                answers = await burst(logins, 24)
            finally:
                await logins.close()
            statuses = sorted(status for status, _, _ in answers)
            busy = [body for status, body, _ in answers if status == 429]
            checked = [body for status, body, _ in answers if status == 401]
            print(f"of 24 at once: {len(checked)} checked, {len(busy)} busy")
            assert set(statuses) == {401, 429}, statuses
            assert busy == [BUSY] * len(busy)
            assert checked == [GENERIC] * len(checked)
            failed = await audit_entries(admin, action="user.login_failed")
            assert len(failed) == len(checked), "a busy answer is no failed attempt"
            # The address was charged only for the checked ones: alice still gets in.
            async with HelplineClient(relay.url, relay.ca_pem) as client:
                await client.login("alice", alice.password, alice.code())
                assert (await client.me())["username"] == "alice"
    finally:
        relay.stop()
    peak, bound, queue, refused = peak_line(relay)
    print(f"password checks at once: at most {peak} (bound {bound}, queue {queue})")
    assert (peak, bound, queue) == (1, 1, 1)
    assert refused == len(busy)
