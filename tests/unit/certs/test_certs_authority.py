"""CA creation, server certificates, agent CSRs and their signing, device ids."""

from __future__ import annotations

import base64
import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import (
    CertificateRequestError,
    build_agent_csr,
    certificate_pem,
    create_ca,
    device_id_of,
    generate_private_key,
    issue_server_certificate,
    load_certificate,
    sign_agent_csr,
    validate_device_id,
)
from certs.authority import MAX_CSR_BYTES
from protocol.errors import ErrorCode, HelplineError


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def common_names(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def csr_with(key: CertificateIssuerPrivateKeyTypes, subject: str = "laptop-01") -> bytes:
    """A CSR signed by any key type, bypassing build_agent_csr's P-256 check."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def pem_from_der(der: bytes, label: str = "CERTIFICATE REQUEST") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join(
        [f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""]
    )


# --- the CA ------------------------------------------------------------------


def test_ca_is_self_signed_p256_with_ca_extensions(ca) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    assert common_names(cert.subject) == ["Helpline Test CA"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(cert)

    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=True, path_length=0)

    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature

    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_ca_default_name_and_validity() -> None:
    _, cert = create_ca(valid_days=30)
    assert common_names(cert.subject) == ["Helpline CA"]
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now
    lifetime = cert.not_valid_after_utc - now
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)


def test_ca_rejects_non_positive_validity() -> None:
    with pytest.raises(ValueError, match="valid_days"):
        create_ca(valid_days=0)


def test_each_certificate_gets_a_fresh_random_serial(ca, server, agent) -> None:
    serials = {ca.cert.serial_number, server.cert.serial_number, agent.cert.serial_number}
    assert len(serials) == 3
    assert all(s.bit_length() > 64 for s in serials)


# --- server certificates -------------------------------------------------------


def test_server_certificate_names(server, server_names) -> None:
    san = ext(server.cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "relay.example.test"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert common_names(server.cert.subject) == [server_names[0]]


def test_server_certificate_usage_and_chain(ca, server) -> None:
    cert = server.cert
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)
    assert ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert not basic.value.ca
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = ext(ca.cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key() != ca.cert.public_key()


def test_server_certificate_never_outlives_the_ca() -> None:
    ca_key, ca_cert = create_ca(valid_days=10)
    _, cert = issue_server_certificate(ca_key, ca_cert, ["localhost"], valid_days=825)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_server_names_are_deduplicated_and_stripped(ca) -> None:
    _, cert = issue_server_certificate(ca.key, ca.cert, [" 10.0.0.1 ", "10.0.0.1", "relay"])
    san = ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.IPAddress(ipaddress.ip_address("10.0.0.1")), x509.DNSName("relay")]
    assert common_names(cert.subject) == ["10.0.0.1"]


def test_long_first_name_leaves_the_subject_empty_and_the_san_critical(ca) -> None:
    long_name = ".".join(["a" * 30] * 3)  # 92 characters: too long for a CN
    _, cert = issue_server_certificate(ca.key, ca.cert, [long_name])
    assert len(cert.subject) == 0
    san = ext(cert, x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.DNSName) == [long_name]


@pytest.mark.parametrize(
    "names", [[], [""], ["   "], ["bad name"], ["bücher.example"], ["-x.test"]]
)
def test_bad_server_names_are_refused(ca, names) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        issue_server_certificate(ca.key, ca.cert, names)


def test_a_single_string_is_not_a_list_of_names(ca) -> None:
    with pytest.raises(TypeError):
        issue_server_certificate(ca.key, ca.cert, "localhost")


def test_a_ca_key_that_does_not_match_its_certificate_is_refused(ca, other_ca) -> None:
    with pytest.raises(ValueError, match="does not match"):
        issue_server_certificate(other_ca.key, ca.cert, ["localhost"])


def test_a_leaf_certificate_cannot_act_as_ca(server) -> None:
    with pytest.raises(ValueError, match="not a CA"):
        issue_server_certificate(server.key, server.cert, ["localhost"])


# --- agent CSRs and certificates --------------------------------------------------


def test_agent_csr_is_signed_by_its_key() -> None:
    key = generate_private_key()
    csr = x509.load_pem_x509_csr(build_agent_csr(key, "laptop-01"))
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert common_names(csr.subject) == ["laptop-01"]


def test_agent_csr_cuts_a_long_device_name() -> None:
    csr = x509.load_pem_x509_csr(build_agent_csr(generate_private_key(), "h" * 100))
    assert common_names(csr.subject) == ["h" * 64]


def test_agent_csr_refuses_an_empty_name_or_a_non_p256_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        build_agent_csr(generate_private_key(), "")
    with pytest.raises(ValueError, match="P-256"):
        build_agent_csr(ec.generate_private_key(ec.SECP384R1()), "laptop-01")


def test_agent_certificate_carries_the_device_id_not_the_csr_subject(ca, agent, device_id) -> None:
    cert = agent.cert
    assert device_id_of(cert) == device_id
    assert common_names(cert.subject) == [device_id]
    assert "laptop-01" not in cert.subject.rfc4514_string()
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:helpline:device:{device_id}"
    ]
    assert cert.public_key() == agent.key.public_key()
    cert.verify_directly_issued_by(ca.cert)


def test_agent_certificate_usage(ca, agent) -> None:
    cert = agent.cert
    assert ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=False, path_length=None)
    assert ext(cert, x509.KeyUsage).value.digital_signature
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca.cert, x509.SubjectKeyIdentifier).value.digest


def test_signing_ignores_the_extensions_the_agent_asked_for(ca) -> None:
    key = generate_private_key()
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("urn:helpline:device:someone-else"),
                    x509.DNSName("relay"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    cert = sign_agent_csr(ca.key, ca.cert, greedy, "dev-honest")
    assert device_id_of(cert) == "dev-honest"
    assert common_names(cert.subject) == ["dev-honest"]
    assert not ext(cert, x509.BasicConstraints).value.ca
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("urn:helpline:device:dev-honest")
    ]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_csr_with_a_tampered_signed_part_is_refused(ca) -> None:
    csr_pem = build_agent_csr(generate_private_key(), "laptop-01")
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(b"laptop-01") == 1
    tampered = pem_from_der(der.replace(b"laptop-01", b"laptop-02"))
    assert x509.load_pem_x509_csr(tampered).subject != x509.load_pem_x509_csr(csr_pem).subject
    with pytest.raises(CertificateRequestError, match="signature is invalid") as info:
        sign_agent_csr(ca.key, ca.cert, tampered, "dev-1")
    assert isinstance(info.value, HelplineError)
    assert info.value.code is ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), id="rsa"
        ),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
    ],
)
def test_a_csr_with_a_non_p256_key_is_refused(ca, make_key) -> None:
    csr = csr_with(make_key())
    assert x509.load_pem_x509_csr(csr).is_signature_valid
    with pytest.raises(CertificateRequestError, match="P-256"):
        sign_agent_csr(ca.key, ca.cert, csr, "dev-1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a csr",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_garbage_is_refused_as_a_request_error(ca, data) -> None:
    with pytest.raises(CertificateRequestError, match="does not parse"):
        sign_agent_csr(ca.key, ca.cert, data, "dev-1")


def test_an_oversized_csr_is_refused_before_parsing(ca) -> None:
    with pytest.raises(CertificateRequestError, match="too large"):
        sign_agent_csr(ca.key, ca.cert, b"A" * (MAX_CSR_BYTES + 1), "dev-1")


@pytest.mark.parametrize(
    "bad", ["", "-leading-dash", "has space", "x" * 65, "dev/1", "dev:1", "dév"]
)
def test_malformed_device_ids_are_refused(ca, bad) -> None:
    csr = build_agent_csr(generate_private_key(), "laptop-01")
    with pytest.raises(ValueError, match="malformed device id"):
        sign_agent_csr(ca.key, ca.cert, csr, bad)


@pytest.mark.parametrize(
    "good", ["a", "dev-4f2a9c", "0b5e0a4e-8d5b-4d0e-9d8e-7c1b2a3f4e5d", "x" * 64, "a.b_c-d"]
)
def test_well_formed_device_ids_pass(good) -> None:
    assert validate_device_id(good) == good


def test_device_id_of_needs_exactly_one_device_uri(ca, server) -> None:
    with pytest.raises(ValueError, match="no subject alternative name"):
        device_id_of(ca.cert)
    with pytest.raises(ValueError, match="found 0"):
        device_id_of(server.cert)
    key = generate_private_key()
    two = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("urn:helpline:device:a"),
                    x509.UniformResourceIdentifier("urn:helpline:device:b"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ValueError, match="found 2"):
        device_id_of(two)


# --- PEM / DER -----------------------------------------------------------------------


def test_certificates_round_trip_through_pem_and_der(agent) -> None:
    pem = certificate_pem(agent.cert)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert load_certificate(pem) == agent.cert
    assert load_certificate(agent.cert.public_bytes(serialization.Encoding.DER)) == agent.cert


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_load_certificate_refuses_garbage(data) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message
        load_certificate(data)
