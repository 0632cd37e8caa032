"""The certificate authority: CA creation, relay server certificates, agent enrolment.

The relay owns one self-signed CA (ECDSA P-256, SHA-256 signatures). It issues:

* its own TLS **server certificate** (:func:`issue_server_certificate`), for the
  DNS names and IP addresses agents and browsers use to reach it;
* one **client certificate** per agent (:func:`sign_agent_csr`), from a CSR the
  agent built with :func:`build_agent_csr` around a key that never leaves it.

When signing a CSR, the relay keeps only the public key, after checking the CSR
is signed by that key (proof of possession) and that the key is P-256. The
subject and extensions the agent asked for are ignored: the identity in the
certificate is the ``device_id`` the relay chose, as a SAN URI
``urn:helpline:device:<device_id>`` (read back by :func:`device_id_of`) and as
the subject common name.

Validity starts a few minutes in the past (to tolerate clock skew) and never
extends beyond the CA's own expiry.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertificateRequestError
from .keys import generate_private_key, is_p256

__all__ = [
    "CLOCK_SKEW",
    "DEVICE_URI_PREFIX",
    "MAX_CSR_BYTES",
    "build_agent_csr",
    "certificate_pem",
    "create_ca",
    "device_id_of",
    "issue_server_certificate",
    "load_certificate",
    "sign_agent_csr",
    "validate_device_id",
]

DEVICE_URI_PREFIX = "urn:helpline:device:"
"""SAN URI prefix that carries an agent's device id."""

CLOCK_SKEW = datetime.timedelta(minutes=5)
"""How far in the past every certificate's validity starts."""

MAX_CSR_BYTES = 16 * 1024
"""Larger CSRs are refused before parsing (a P-256 CSR is well under 1 KiB)."""

_COMMON_NAME_MAX = 64  # RFC 5280 ub-common-name
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SIGNATURE_HASH = hashes.SHA256()
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*")  # optional "*." wildcard
_DNS_NAME_MAX = 253


def create_ca(
    common_name: str = "Helpline CA", *, valid_days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed CA: its private key and certificate.

    BasicConstraints ``ca=True, path_length=0`` (it signs leaves only) and
    KeyUsage ``keyCertSign, cRLSign``, both critical; a SubjectKeyIdentifier.
    """
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(valid_days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, _SIGNATURE_HASH)
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Sequence[str],
    *,
    valid_days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and TLS server certificate for ``names`` (DNS names and/or IP addresses).

    Each name that parses with :func:`ipaddress.ip_address` goes into the SAN as
    an IP address, every other one as a DNS name (ASCII letters, digits and
    hyphens, IDNA A-label form, optionally a leading ``*.``); duplicates are
    dropped; anything else raises :class:`ValueError`.
    The subject CN is the first name (omitted, with the SAN marked critical, if
    it is longer than 64 characters). EKU serverAuth, KeyUsage digitalSignature.
    """
    _check_ca_pair(ca_key, ca_cert)
    entries = _san_entries(names)
    key = generate_private_key()
    first = names[0].strip()
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)])
        if len(first) <= _COMMON_NAME_MAX
        else x509.Name([])
    )
    builder = (
        _leaf_builder(ca_key, ca_cert, key.public_key(), subject, valid_days)
        .add_extension(x509.SubjectAlternativeName(entries), critical=len(subject) == 0)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    return key, builder.sign(ca_key, _SIGNATURE_HASH)


def build_agent_csr(key: ec.EllipticCurvePrivateKey, device_name: str) -> bytes:
    """A PEM CSR for ``key``, with ``device_name`` (e.g. the hostname) as subject CN.

    The name is informational only (the relay ignores it); it is cut to 64
    characters. :class:`ValueError` if it is empty or ``key`` is not P-256.
    """
    if not is_p256(key):
        raise ValueError("agent key must be ECDSA P-256")
    if not device_name:
        raise ValueError("device name must not be empty")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_name[:_COMMON_NAME_MAX])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, _SIGNATURE_HASH)
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_agent_csr(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    csr_pem: bytes,
    device_id: str,
    *,
    valid_days: int = 825,
) -> x509.Certificate:
    """An agent client certificate for ``device_id`` over the public key in ``csr_pem``.

    :class:`~certs.errors.CertificateRequestError` if the CSR is too large, does
    not parse, holds a key other than ECDSA P-256, or is not signed by its key.
    Its subject and extensions are ignored. :class:`ValueError` if ``device_id``
    is malformed (see :func:`validate_device_id`) or the CA pair does not match.
    """
    validate_device_id(device_id)
    _check_ca_pair(ca_key, ca_cert)
    public_key = _checked_csr_key(csr_pem)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    uri = x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)
    builder = (
        _leaf_builder(ca_key, ca_cert, public_key, subject, valid_days)
        .add_extension(x509.SubjectAlternativeName([uri]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return builder.sign(ca_key, _SIGNATURE_HASH)


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is 1-64 of ``[A-Za-z0-9._-]``, starting alphanumeric.

    Such an id fits a common name and a URN as is. :class:`ValueError` otherwise.
    """
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"malformed device id: {device_id[:80]!r}")
    return device_id


def device_id_of(cert: x509.Certificate) -> str:
    """The device id in an agent certificate's ``urn:helpline:device:`` SAN URI.

    :class:`ValueError` if there is no such URI, more than one, or a malformed id.
    There is no fallback to the subject.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise ValueError("certificate has no subject alternative name") from exc
    ids = [
        uri[len(DEVICE_URI_PREFIX) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(DEVICE_URI_PREFIX)
    ]
    if len(ids) != 1:
        raise ValueError(f"certificate must carry exactly one device URI, found {len(ids)}")
    return validate_device_id(ids[0])


def certificate_pem(cert: x509.Certificate) -> bytes:
    """``cert`` in PEM form."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(data: bytes) -> x509.Certificate:
    """Load one certificate from PEM, or from DER (as ``getpeercert(binary_form=True)`` gives).

    :class:`ValueError` if ``data`` is neither.
    """
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _checked_csr_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The CSR's public key, once the CSR is proven well-formed, P-256 and self-signed."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CertificateRequestError("certificate signing request is too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRequestError("certificate signing request does not parse") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not is_p256(public_key):
        raise CertificateRequestError("certificate signing request key must be ECDSA P-256")
    try:
        signature_valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRequestError("certificate signing request signature is invalid") from exc
    if not signature_valid:
        raise CertificateRequestError("certificate signing request signature is invalid")
    return public_key


def _leaf_builder(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    valid_days: int,
) -> x509.CertificateBuilder:
    """What server and agent certificates share: issuer, serial, validity, key ids, usage."""
    not_before, not_after = _validity(valid_days, ca_cert)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(ca_key, ca_cert), critical=False)
    )


def _validity(
    valid_days: int, ca_cert: x509.Certificate | None = None
) -> tuple[datetime.datetime, datetime.datetime]:
    if valid_days < 1:
        raise ValueError(f"valid_days must be at least 1, got {valid_days}")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_after = now + datetime.timedelta(days=valid_days)
    if ca_cert is not None:
        not_after = min(not_after, ca_cert.not_valid_after_utc)
    return now - CLOCK_SKEW, not_after


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _check_ca_pair(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate) -> None:
    """:class:`ValueError` unless ``ca_key`` is the key of ``ca_cert`` and it is a CA."""
    if ca_key.public_key() != ca_cert.public_key():
        raise ValueError("CA private key does not match the CA certificate")
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise ValueError("CA certificate has no BasicConstraints") from exc
    if not constraints.ca:
        raise ValueError("CA certificate is not a CA (BasicConstraints ca=False)")


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries for server ``names``, in order, without duplicates."""
    if isinstance(names, str):
        raise TypeError("names must be a sequence of names, not a single string")
    if not names:
        raise ValueError("a server certificate needs at least one name")
    entries: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip()
        if not name:
            raise ValueError("server names must not be empty")
        entry: x509.GeneralName
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            if not _DNS_NAME.fullmatch(name) or len(name) > _DNS_NAME_MAX:
                raise ValueError(f"not an IP address or DNS name: {name[:80]!r}") from None
            entry = x509.DNSName(name)
        else:
            entry = x509.IPAddress(address)
        if entry not in entries:
            entries.append(entry)
    return entries
