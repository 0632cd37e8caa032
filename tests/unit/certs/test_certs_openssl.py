"""The certificates as other tools see them: the real openssl binary, cryptography's verifier."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from certs import fingerprint, parse_fingerprint


@pytest.mark.parametrize(("leaf", "purpose"), [("server", "sslserver"), ("agent", "sslclient")])
def test_openssl_verifies_the_chain(openssl, ca, leaf, purpose, request) -> None:
    cert_path = request.getfixturevalue(leaf).cert_path
    result = openssl(
        "verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca.cert_path, cert_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{cert_path}: OK"


def test_openssl_verifies_the_ca_itself(openssl, ca) -> None:
    result = openssl("verify", "-x509_strict", "-CAfile", ca.cert_path, ca.cert_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("leaf", ["stranger_server", "stranger_agent"])
def test_openssl_rejects_a_certificate_from_another_ca(openssl, ca, leaf, request) -> None:
    cert_path = request.getfixturevalue(leaf).cert_path
    result = openssl("verify", "-CAfile", ca.cert_path, cert_path)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_openssl_refuses_the_agent_certificate_for_a_server(openssl, ca, agent) -> None:
    result = openssl("verify", "-purpose", "sslserver", "-CAfile", ca.cert_path, agent.cert_path)
    assert result.returncode != 0


@pytest.mark.parametrize("which", ["ca", "server", "agent"])
def test_openssl_fingerprint_agrees(openssl, which, request) -> None:
    issued = request.getfixturevalue(which)
    result = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", issued.cert_path)
    assert result.returncode == 0, result.stderr
    label, _, colon_hex = result.stdout.strip().partition("=")
    assert label.lower() == "sha256 fingerprint"
    assert parse_fingerprint("sha256:" + colon_hex) == bytes.fromhex(fingerprint(issued.cert)[7:])
    assert fingerprint(issued.cert) == "sha256:" + colon_hex.replace(":", "").lower()


def test_openssl_reads_the_san_entries(openssl, server) -> None:
    result = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", server.cert_path)
    assert result.returncode == 0, result.stderr
    assert (
        "DNS:localhost, DNS:relay.example.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"
        in result.stdout
    )


def test_openssl_reads_the_device_uri(openssl, agent, device_id) -> None:
    result = openssl("x509", "-noout", "-subject", "-ext", "subjectAltName", "-in", agent.cert_path)
    assert result.returncode == 0, result.stderr
    assert f"URI:urn:helpline:device:{device_id}" in result.stdout
    assert f"CN = {device_id}" in result.stdout


# cryptography's own RFC 5280 / CA/B Forum path validation is stricter than openssl's.


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("name", ["localhost", "relay.example.test", "127.0.0.1", "::1"])
def test_strict_verifier_accepts_the_server_certificate(ca, server, name) -> None:
    try:
        subject: x509.verification.Subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    verifier = PolicyBuilder().store(Store([ca.cert])).time(_now()).build_server_verifier(subject)
    chain = verifier.verify(server.cert, [])
    assert chain[-1] == ca.cert


def test_strict_verifier_rejects_a_name_not_in_the_certificate(ca, server) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([ca.cert]))
        .time(_now())
        .build_server_verifier(x509.DNSName("evil.example.test"))
    )
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(server.cert, [])


def test_strict_verifier_accepts_the_agent_certificate(ca, agent, device_id) -> None:
    verifier = PolicyBuilder().store(Store([ca.cert])).time(_now()).build_client_verifier()
    verified = verifier.verify(agent.cert, [])
    assert verified.chain[-1] == ca.cert
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(f"urn:helpline:device:{device_id}") in verified.subjects


def test_strict_verifier_rejects_an_agent_from_another_ca(ca, stranger_agent) -> None:
    verifier = PolicyBuilder().store(Store([ca.cert])).time(_now()).build_client_verifier()
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(stranger_agent.cert, [])
