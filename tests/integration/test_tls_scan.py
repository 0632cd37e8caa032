"""The relay's TLS as an outside scanner sees it: sslyze against a running relay.

sslyze (a PyPI package, installed by ``make install`` into its own venv because it pins an
older ``cryptography`` than ours) connects like any client would and reports what the
server accepts. Expected: TLS 1.3 and nothing older, no session resumption (every handshake
sees the current CRL), a certificate chaining to the relay's own CA, client certificates
asked for and checked; and, with our own client: a revoked agent certificate and one from
another CA refused during the handshake, the agent endpoint refused without a certificate.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from certs.authority import build_agent_csr, certificate_pem, create_ca, sign_agent_csr
from certs.contexts import pinned_client_context
from certs.keys import generate_private_key, private_key_pem
from console.client import HelplineClient

from .conftest import AgentProcess, RelayProcess, async_wait_for, wait_for
from .test_revocation import handshake_refusal

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SSLYZE = Path(os.environ.get("HELPLINE_SSLYZE", REPO / ".venv/tools/sslyze/bin/sslyze"))


def sslyze_raw(relay: RelayProcess, tmp_path: Path, *options: str) -> dict[str, Any]:
    """Run the real sslyze against the relay; the one server result of its JSON report."""
    assert SSLYZE.exists(), f"sslyze is missing at {SSLYZE}: run `make install`"
    report = tmp_path / "sslyze.json"
    result = subprocess.run(
        [
            SSLYZE,
            "--quiet",
            "--json_out",
            report,
            "--mozilla_config",
            "disable",
            *options,
            f"127.0.0.1:{relay.port}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (server,) = json.loads(report.read_text())["server_scan_results"]
    return dict(server)


def sslyze(relay: RelayProcess, tmp_path: Path, *options: str) -> dict[str, Any]:
    server = sslyze_raw(relay, tmp_path, *options)
    assert server["scan_status"] == "COMPLETED", server
    return server


def accepted(scan: dict[str, Any], command: str) -> list[str]:
    attempt = scan["scan_result"][command]
    assert attempt["status"] == "COMPLETED", attempt
    return [suite["cipher_suite"]["name"] for suite in attempt["result"]["accepted_cipher_suites"]]


def test_sslyze_finds_tls_1_3_only_no_resumption_and_our_chain(
    relay: RelayProcess, tmp_path: Path
) -> None:
    scan = sslyze(
        relay,
        tmp_path,
        "--sslv2",
        "--sslv3",
        "--tlsv1",
        "--tlsv1_1",
        "--tlsv1_2",
        "--tlsv1_3",
        "--resum",
        "--certinfo",
        "--certinfo_ca_file",
        str(relay.data_dir / "ca.pem"),
        "--compression",
        "--heartbleed",
        "--openssl_ccs",
        "--reneg",
        "--early_data",
    )
    commands = scan["scan_result"]
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2"):
        assert accepted(scan, f"{old}_cipher_suites") == [], f"{old} accepted"
    modern = accepted(scan, "tls_1_3_cipher_suites")
    assert modern, "TLS 1.3 not accepted"
    assert all(name.startswith("TLS_") for name in modern), modern

    # sslyze resumes only below TLS 1.3, which the relay refuses outright ...
    resumption = commands["session_resumption"]["result"]
    assert resumption["session_id_resumption_result"] == "SERVER_IS_TLS_1_3_ONLY", resumption
    assert resumption["tls_ticket_resumption_result"] == "SERVER_IS_TLS_1_3_ONLY", resumption
    # ... and TLS 1.3 0-RTT data is not accepted (it would be replayable).
    assert not commands["tls_1_3_early_data"]["result"]["supports_early_data"]

    deployments = commands["certificate_info"]["result"]["certificate_deployments"]
    (deployment,) = deployments
    (custom,) = [
        v
        for v in deployment["path_validation_results"]
        if v["trust_store"]["name"] == "Supplied CA file"
    ]
    assert custom["was_validation_successful"], custom

    assert not commands["tls_compression"]["result"]["supports_compression"]
    assert not commands["heartbleed"]["result"]["is_vulnerable_to_heartbleed"]
    assert not commands["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"]

    # The server asks every client for a certificate (agents have one, browsers do not):
    # sslyze reports the request, and the agent endpoint then insists on it (below).
    info = scan["connectivity_result"]
    assert info["client_auth_requirement"] == "OPTIONAL", info
    assert info["highest_tls_version_supported"] == "TLS_1_3"


def test_no_tls_1_3_session_ticket_and_no_resumption(relay: RelayProcess) -> None:
    """sslyze cannot resume TLS 1.3 sessions; the stdlib client can: the relay issues no
    ticket, so a second connection offering the first one's session makes a full handshake."""
    context = pinned_client_context(relay.ca_pem)
    sessions = []
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw,
            context.wrap_socket(
                raw, server_hostname="127.0.0.1", session=sessions[-1] if sessions else None
            ) as tls,
        ):
            tls.sendall(
                b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            answer = tls.recv(4096)  # a ticket would arrive before the answer
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert tls.version() == "TLSv1.3"
            assert not tls.session_reused
            session = tls.session
            assert session is not None and not session.has_ticket
            sessions.append(session)


async def test_agent_endpoint_requires_a_client_certificate(
    relay: RelayProcess, tmp_path: Path
) -> None:
    context = pinned_client_context(relay.ca_pem)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{relay.url}/agent/v1/connect", ssl=context)
    assert refused.value.status in (401, 403)


async def test_sslyze_with_agent_certificates_valid_revoked_and_foreign(
    relay: RelayProcess,
    start_agent: Any,
    admin_client: HelplineClient,
    tmp_path: Path,
) -> None:
    """sslyze presenting a live agent's certificate gets a TLS 1.3 connection; once the
    device is revoked, that certificate (and one from another CA) is refused by the
    handshake, and the other agent never notices."""
    doomed: AgentProcess = start_agent("scanned")
    healthy: AgentProcess = start_agent("bystander")

    async def both_online() -> bool:
        devices = {d["name"]: d for d in await admin_client.devices()}
        return all(devices.get(n, {}).get("online") for n in ("scanned", "bystander"))

    await async_wait_for(both_online, what="both agents online")

    def scan_as(cert: Path, key: Path, name: str) -> dict[str, Any]:
        directory = tmp_path / name
        directory.mkdir()
        return sslyze_raw(relay, directory, "--tlsv1_3", "--cert", str(cert), "--key", str(key))

    live = scan_as(doomed.config_dir / "agent.pem", doomed.config_dir / "agent.key", "live")
    assert live["scan_status"] == "COMPLETED", live
    assert accepted(live, "tls_1_3_cipher_suites")

    await admin_client.revoke_device("scanned")
    wait_for(lambda: "device revoked (4401)" in doomed.log(), what="the revoked agent cut off")
    # In TLS 1.3 the server judges a client's certificate after the client has finished its
    # side of the handshake, and sslyze stops there: it reports a revoked or foreign
    # certificate's connection as fine. Reading the relay's answer shows the refusal.
    revoked = pinned_client_context(
        relay.ca_pem, doomed.config_dir / "agent.pem", doomed.config_dir / "agent.key"
    )
    assert "ALERT_CERTIFICATE_REVOKED" in str(
        await asyncio.to_thread(handshake_refusal, relay, revoked)
    )

    foreign_key, foreign_ca = create_ca("Helpline CA")
    key = generate_private_key()
    cert = sign_agent_csr(
        foreign_key, foreign_ca, build_agent_csr(key, "bystander"), healthy.device_id
    )
    (tmp_path / "foreign.pem").write_bytes(certificate_pem(cert))
    (tmp_path / "foreign.key").write_bytes(private_key_pem(key))
    foreign = pinned_client_context(
        relay.ca_pem, tmp_path / "foreign.pem", tmp_path / "foreign.key"
    )
    assert "ALERT_UNKNOWN_CA" in str(await asyncio.to_thread(handshake_refusal, relay, foreign))

    # The other agent never noticed.
    devices = {d["name"]: d for d in await admin_client.devices()}
    assert devices["bystander"]["online"]
    assert healthy.process is not None and healthy.process.poll() is None
