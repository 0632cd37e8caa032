"""One TOTP code, many logins at once: exactly one gets in, on whichever path it comes.

Twelve logins of one account with the same password, key and code race each other:
four through ``POST /api/v1/login``, four through the web console's ``POST /web/login``
and four real OpenSSH clients through the gateway (key, then the code by
keyboard-interactive). The SSH clients are held at the code prompt until all are there,
then everything is released together. The relay records the code's step with a
compare-and-set in the store, so one login wins and the eleven others are refused like
any reused code; the lockout threshold is raised here so that it is that
compare-and-set, not the lockout, that stops them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from certs.contexts import pinned_client_context
from console.client import HelplineClient

from .conftest import (
    AgentProcess,
    RelayProcess,
    async_wait_for,
    init_relay,
    totp_now,
    wait_for,
)
from .helpers import audit_entries
from .session_helpers import wait_online
from .test_ssh_gateway import SshClient, Technician, ssh, technician, text

pytestmark = pytest.mark.integration

__all__ = ["ssh"]  # the fixture, imported for this module's tests

GENERIC = {"error": {"code": 4401, "message": "invalid username, password or one-time code"}}
PER_PATH = 4
FAILED = ("user.login_failed", "ssh.login_failed")

GATED_ASKPASS = """\
#!{python}
# SSH_ASKPASS that logs the prompt, waits for the test's go file, then prints the code.
import os, sys, time
with open(os.environ["HELPLINE_TEST_ASKPASS_LOG"], "a") as log:
    log.write((sys.argv[1] if len(sys.argv) > 1 else "") + "\\n")
deadline = time.monotonic() + 60
while not os.path.exists(os.environ["HELPLINE_TEST_GO"]) and time.monotonic() < deadline:
    time.sleep(0.005)
print(os.environ["HELPLINE_TEST_OTP"])
"""


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay whose lockout would let all twelve attempts through to the code check."""
    process = init_relay(tmp_path)
    toml = process.data_dir / "relay.toml"
    toml.write_text(
        toml.read_text()
        .replace("lockout_threshold = 5", "lockout_threshold = 50")
        .replace("address_failures = 20", "address_failures = 100")
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def spawn_gated(ssh: SshClient, tina: Technician, code: str, go: Path) -> subprocess.Popen[bytes]:
    """``ssh tina:desk echo ssh-in`` in the background; it answers ``code`` once ``go`` exists."""
    return subprocess.Popen(
        ssh.argv("tina:desk", tina.key, "echo ssh-in"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ssh.env(otp=code, HELPLINE_TEST_GO=str(go)),
    )


class WarmLogin:
    """One login over a TLS connection opened beforehand, so that the logins of a burst
    reach the relay within a millisecond of each other instead of one handshake apart."""

    def __init__(self, relay: RelayProcess, path: str) -> None:
        self.relay = relay
        self.path = path
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, ssl=pinned_client_context(relay.ca_pem))
        )

    async def warm(self) -> None:
        async with self.session.get(self.relay.url + "/api/v1/health") as response:
            assert response.status == 200

    async def login(self, tina: Technician, code: str) -> tuple[int, Any]:
        body = {"username": tina.name, "password": tina.user.password, "otp": code}
        async with self.session.post(
            self.relay.url + self.path, json=body, headers={"Origin": self.relay.url}
        ) as response:
            answer = await response.json(content_type=None)
            if response.status == 200 and self.path == "/web/login":
                assert "__Host-helpline" in response.cookies
            return response.status, answer

    async def close(self) -> None:
        await self.session.close()


async def test_one_code_logs_in_once_across_rest_web_and_ssh(
    relay: RelayProcess,
    admin_client: HelplineClient,
    start_agent: Callable[..., AgentProcess],
    ssh: SshClient,
    tmp_path: Path,
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tina = await technician(relay, admin_client, ssh, "tina", totp=True)
    askpass = tmp_path / "gated-askpass"
    askpass.write_text(GATED_ASKPASS.format(python=sys.executable))
    askpass.chmod(0o700)
    ssh.askpass = askpass
    go = tmp_path / "go"

    code = totp_now(tina.user.totp_secret)
    https = [WarmLogin(relay, path) for path in ("/api/v1/login", "/web/login") * PER_PATH]
    clients = [spawn_gated(ssh, tina, code, go) for _ in range(PER_PATH)]
    try:
        # Every SSH client has proven its key and waits at the code prompt, every HTTPS
        # client has its connection open...
        wait_for(lambda: len(ssh.prompts()) == PER_PATH, what="the SSH clients at the prompt")
        assert ssh.prompts() == ["One-time code: "] * PER_PATH
        await asyncio.gather(*(client.warm() for client in https))
        before = max(e["seq"] for e in await audit_entries(admin_client))

        # ...then all twelve go at once.
        async def release() -> None:
            go.touch()

        answers = await asyncio.gather(release(), *(client.login(tina, code) for client in https))
        http_answers = answers[1:]
        results = [client.communicate(timeout=60) for client in clients]
    finally:
        for warm in https:
            await warm.close()
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait(10)

    ssh_wins = [out for out, _ in results if b"ssh-in" in out]
    http_wins = [body for status, body in http_answers if status == 200]
    assert len(ssh_wins) + len(http_wins) == 1, (http_answers, results)

    # The losers all get the answer of any reused code: no hint that someone else won.
    losers = [(status, body) for status, body in http_answers if status != 200]
    assert losers == [(401, GENERIC)] * len(losers)
    for client, (out, err) in zip(clients, results, strict=True):
        if b"ssh-in" not in out:
            assert client.returncode == 255, text(err)
            assert out == b""
            assert "Permission denied" in text(err)

    # Audited: one login, eleven refusals for a reused code.
    async def settled() -> list[dict[str, Any]] | None:
        entries = [e for e in await audit_entries(admin_client) if e["seq"] > before]
        refusals = [e for e in entries if e["action"] in FAILED and e["actor"] == "tina"]
        return entries if len(refusals) >= 3 * PER_PATH - 1 else None

    entries = await async_wait_for(settled, what="the refused logins audited")
    logins = [e["target"] for e in entries if e["action"] in ("user.login", "ssh.login")]
    assert logins == ["tina"]
    reasons = [
        e["details"]["reason"] for e in entries if e["action"] in FAILED and e["actor"] == "tina"
    ]
    assert reasons == ["one-time code reused"] * (3 * PER_PATH - 1)

    # Nobody else is harmed: the admin's session works, and tina's next code is a new code.
    assert (await admin_client.me())["username"] == relay.admin["username"]
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login(tina.name, tina.user.password, tina.user.code(step_offset=1))
        assert (await client.me())["username"] == "tina"
    assert (await admin_client.verify_audit()).ok
