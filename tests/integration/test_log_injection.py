"""CR/LF in untrusted text cannot forge lines of the relay's log.

A login name and an agent's inventory (hostname, OS, user) carrying CR, LF and an
escape sequence, sent to a real relay: its log file (``helpline-relay serve``'s
output) shows them escaped, inside the one record that mentions them. User names
are checked against their pattern before any lookup, and names ending in a newline,
which ``$`` used to let through, are refused when accounts and devices are made.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from certs.authority import build_agent_csr
from certs.contexts import pinned_client_context
from certs.keys import generate_private_key
from console.client import HelplineClient
from protocol import Hello, Inventory

from .conftest import RelayProcess, async_wait_for, enroll_agent, wait_for
from .helpers import api, audit_entries, raw_agent_link

pytestmark = pytest.mark.integration

#: What a forged record would look like (short: login names are at most 64 characters).
FORGED = "2026-01-01 00:00:00,000 level=INFO logger=x forged"
GENERIC = {"error": {"code": 4401, "message": "invalid username, password or one-time code"}}
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} level=")


def raw_log(relay: RelayProcess) -> str:
    """The relay's log as written (no newline translation: a CR stays a CR)."""
    return relay.log_path.read_bytes().decode(errors="replace")


def lines_with(log: str, needle: str) -> list[str]:
    return [line for line in log.split("\n") if needle in line]


async def test_crlf_in_login_names_and_agent_text_is_escaped_in_the_log(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    name = f"bob\r\n{FORGED}"
    status, body = await api(
        relay, "POST", "/api/v1/login", body={"username": name, "password": "x" * 12, "otp": ""}
    )
    assert (status, body) == (401, GENERIC)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            relay.url + "/web/login",
            json={"username": f"eve\n{FORGED}", "password": "x" * 12, "otp": ""},
            headers={"Origin": relay.url},
            ssl=pinned_client_context(relay.ca_pem),
        ) as response,
    ):
        assert response.status == 401
        assert await response.json() == GENERIC

    async def refused() -> bool:
        failed = await audit_entries(admin_client, action="user.login_failed")
        return len(failed) == 2

    await async_wait_for(refused, what="both refused logins audited")
    wait_for(
        lambda: len(lines_with(relay.log(), "logger=helpline.audit audit user.login_failed")) >= 2,
        what="the refusals logged",
    )
    log = raw_log(relay)

    # No line of the log is the forged record, nor starts with anything but a record.
    assert not [line for line in log.split("\n") if line.startswith(FORGED[:10] + " 00:00")]
    assert "\x1b" not in log
    escaped = FORGED.replace("\\", "\\\\")
    (bob,) = lines_with(log, "actor=bob\\r\\n" + escaped)
    (eve,) = lines_with(log, "actor=eve\\n" + escaped)
    for line in (bob, eve):
        assert RECORD_START.match(line), line
        assert "\r" not in line

    agent = enroll_agent(relay, tmp_path, "desk")  # enrolled, never run: we speak for it
    async with raw_agent_link(relay, agent.config_dir) as link:
        await link.send_hello()
        assert isinstance(await link.next_message(), Hello)
        await link.send_message(
            Inventory(
                hostname=f"desk\r\n{FORGED}",
                os="Linux\n\x1b[2Jcleared",
                user="u\u2028ser",
                agent_version="0.1.0",
            )
        )
        wait_for(lambda: "is host desk" in relay.log(), what="the agent's inventory logged")

    log = raw_log(relay)
    assert not [line for line in log.split("\n") if line.startswith(FORGED[:10] + " 00:00")]
    assert "\x1b" not in log
    (inventory,) = lines_with(log, "is host desk\\r\\n" + escaped)
    assert RECORD_START.match(inventory), inventory
    assert "\r" not in inventory
    assert "Linux\\n\\x1b[2Jcleared" in inventory
    assert "u\\u2028ser" in inventory

    # The audit keeps the name as sent (escaped where it is shown); nothing was looked up.
    failed = await audit_entries(admin_client, action="user.login_failed")
    assert [e["details"]["reason"] for e in failed] == ["user name not allowed"] * 2
    assert failed[0]["actor"] == name


async def test_names_ending_in_a_newline_are_refused(
    relay: RelayProcess, admin_client: HelplineClient
) -> None:
    """``$`` matched before a final newline: "bob\\n" and "desk\\n" passed the patterns."""
    token = (await admin_client.create_enrolment_token(max_uses=1))["token"]
    status, body = await api(
        relay,
        "POST",
        "/api/v1/users",
        token=admin_client.token,
        body={"username": "bob\n", "role": "technician"},
    )
    assert status == 400, body
    assert body["error"]["message"] == "field 'username' has characters that are not allowed"
    csr = build_agent_csr(generate_private_key(), "desk").decode()
    status, body = await api(
        relay, "POST", "/api/v1/enroll", body={"token": token, "csr": csr, "name": "desk\n"}
    )
    assert status == 400, body
    assert body["error"]["message"] == "field 'name' has characters that are not allowed"
    assert [u["username"] for u in await admin_client.users()] == [relay.admin["username"]]
    assert await admin_client.devices() == []
