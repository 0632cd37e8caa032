"""Certificates the relay must refuse at the TLS handshake: one from another CA (even one
naming a real device), and a device's own certificate once an admin revoked it. The
revoked agent is cut off at once and keeps retrying without crashing; the others never
notice."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp

from certs.authority import build_agent_csr, certificate_pem, create_ca, sign_agent_csr
from certs.contexts import pinned_client_context
from certs.keys import generate_private_key, private_key_pem
from console.client import HelplineClient

from .conftest import AgentProcess, RelayProcess, async_wait_for, wait_for
from .helpers import agent_log_count, audit_entries, backoff_ceilings

StartAgent = Callable[..., AgentProcess]


def agent_context(relay: RelayProcess, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    return pinned_client_context(relay.ca_pem, cert_file, key_file)


def handshake_refusal(relay: RelayProcess, context: ssl.SSLContext) -> ssl.SSLError:
    """Connect with the stdlib, finish our side of the TLS 1.3 handshake, and return the
    error the relay's answer raises (in TLS 1.3 the server judges the client's
    certificate after the client considers the handshake done)."""
    with (
        socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        try:
            tls.do_handshake()
            tls.sendall(b"GET /agent/v1/connect HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = tls.recv(1024)
        except ssl.SSLError as error:
            return error
    raise AssertionError(f"the relay accepted the certificate and answered {data!r}")


async def wss_refusal(relay: RelayProcess, context: ssl.SSLContext) -> aiohttp.ClientError:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(relay.url + "/agent/v1/connect", ssl=context) as ws:
                raise AssertionError(f"WSS connected with a refused certificate: {ws!r}")
        except aiohttp.ClientError as error:
            return error


async def devices_by_name(admin: HelplineClient) -> dict[str, dict]:  # type: ignore[type-arg]
    return {d["name"]: d for d in await admin.devices()}


async def wait_online(admin: HelplineClient, *names: str) -> None:
    async def ready() -> bool:
        devices = await devices_by_name(admin)
        return all(n in devices and devices[n]["online"] for n in names)

    await async_wait_for(ready, what=f"{names} online")


async def test_certificate_from_another_ca_is_refused_at_the_handshake(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    desk = start_agent("desk")
    await wait_online(admin_client, "desk")
    audit_before = await audit_entries(admin_client)

    # An impostor CA signs a certificate naming the real device's id.
    evil_key, evil_ca = create_ca("Helpline CA")
    key = generate_private_key()
    cert = sign_agent_csr(evil_key, evil_ca, build_agent_csr(key, "desk"), desk.device_id)
    (tmp_path / "evil.pem").write_bytes(certificate_pem(cert))
    (tmp_path / "evil.key").write_bytes(private_key_pem(key))
    context = agent_context(relay, tmp_path / "evil.pem", tmp_path / "evil.key")

    error = await asyncio.to_thread(handshake_refusal, relay, context)
    assert "ALERT_UNKNOWN_CA" in str(error)
    wss_error = await wss_refusal(relay, context)
    assert "alert unknown ca" in str(wss_error)

    # Nothing reached the application: no device came or went, the real agent never
    # reconnected, and the audit log has nothing new.
    assert await audit_entries(admin_client) == audit_before
    device = (await devices_by_name(admin_client))["desk"]
    assert device["online"]
    assert device["revoked_at"] is None
    assert agent_log_count(desk.log(), "connected to relay as desk") == 1
    assert desk.process is not None
    assert desk.process.poll() is None


async def test_revoked_device_is_cut_off_and_refused_at_the_next_handshake(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    doomed = start_agent("doomed")
    steady = start_agent("steady")
    await wait_online(admin_client, "doomed", "steady")
    steady_seen = (await devices_by_name(admin_client))["steady"]["last_seen"]

    revoked = await admin_client.revoke_device("doomed")
    assert revoked["revoked_at"] is not None

    # Its live connection is closed with AUTH_FAILED at once...
    async def offline() -> bool:
        return not (await devices_by_name(admin_client))["doomed"]["online"]

    await async_wait_for(offline, what="the revoked device to go offline")
    wait_for(lambda: "relay said goodbye: device revoked (4401)" in doomed.log())

    # ...its certificate no longer passes the handshake, and the agent keeps trying.
    def refused_twice() -> bool:
        return agent_log_count(doomed.log(), "alert certificate revoked") >= 2

    wait_for(refused_twice, what=f"two refused reconnection attempts in {doomed.log_path}")
    log = doomed.log()
    after_revoke = log.split("device revoked (4401)", 1)[1]
    delays = [float(d) for d in re.findall(r"reconnecting in ([0-9.]+) s", after_revoke)]
    assert len(delays) >= 2
    ceilings = backoff_ceilings(doomed.config_dir, len(delays))
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True)), (delays, ceilings)
    assert agent_log_count(log, "connected to relay as doomed") == 1
    assert "Traceback" not in log
    assert doomed.process is not None
    assert doomed.process.poll() is None

    context = agent_context(relay, doomed.config_dir / "agent.pem", doomed.config_dir / "agent.key")
    error = await asyncio.to_thread(handshake_refusal, relay, context)
    assert "ALERT_CERTIFICATE_REVOKED" in str(error)

    # The other agent never noticed: same connection, heartbeats still arriving.
    async def steady_heartbeats() -> bool:
        device = (await devices_by_name(admin_client))["steady"]
        assert device["online"]
        return bool(device["last_seen"] > steady_seen)

    await async_wait_for(steady_heartbeats, what="a heartbeat from the other agent")
    assert agent_log_count(steady.log(), "connected to relay as steady") == 1

    revocations = await audit_entries(admin_client, action="device.revoke")
    assert [(e["target"], e["details"]["device_id"]) for e in revocations] == [
        ("doomed", doomed.device_id)
    ]
    # Revoking again is harmless and does not audit twice.
    await admin_client.revoke_device("doomed")
    assert len(await audit_entries(admin_client, action="device.revoke")) == 1
    assert (await admin_client.verify_audit()).ok
