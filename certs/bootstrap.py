"""Trust on first contact, done safely: fetch the relay's CA and pin it by fingerprint.

An agent enrolling, or a technician logging in for the first time, knows the
relay's URL and the CA's ``sha256:`` fingerprint (printed by
``helpline-relay init``), not the CA itself. :func:`fetch_pinned_ca` downloads
the CA over an *unverified* TLS connection and accepts it only if its
fingerprint is the expected one; every connection after that verifies against
this CA alone. A relay (or anyone in between) serving another CA is refused.
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

from cryptography import x509

from protocol.errors import AuthError

from .fingerprints import fingerprint, parse_fingerprint

__all__ = ["CAMismatch", "fetch_ca", "fetch_pinned_ca"]

CA_PATH = "/api/v1/ca"


class CAMismatch(AuthError):
    """The relay served a CA whose fingerprint is not the one we were told to expect."""

    default_message = "the relay's CA does not match the expected fingerprint"


def fetch_ca(url: str, *, timeout: float = 15.0) -> str:
    """The PEM CA the relay at ``url`` serves, *unverified*: check it before trusting it."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"relay URL must be https://HOST[:PORT], not {url!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint check below is the verification
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, timeout=timeout, context=context
    )
    try:
        connection.request("GET", CA_PATH)
        response = connection.getresponse()
        body = response.read(64 * 1024)
        if response.status != 200:
            raise ConnectionError(f"relay answered {response.status} for {CA_PATH}")
    finally:
        connection.close()
    try:
        pem = json.loads(body)["certificate"]
    except (ValueError, KeyError, TypeError):
        raise ConnectionError("relay sent no CA certificate") from None
    if not isinstance(pem, str):
        raise ConnectionError("relay sent no CA certificate")
    return pem


def fetch_pinned_ca(url: str, expected_fingerprint: str, *, timeout: float = 15.0) -> str:
    """The relay's CA as PEM, if and only if its fingerprint is ``expected_fingerprint``."""
    parse_fingerprint(expected_fingerprint)  # a clear ValueError for a malformed one
    pem = fetch_ca(url, timeout=timeout)
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise CAMismatch("the relay sent something that is not a certificate") from None
    actual = fingerprint(certificate)
    if parse_fingerprint(actual) != parse_fingerprint(expected_fingerprint):
        raise CAMismatch(
            f"the relay's CA is {actual}, not the expected {expected_fingerprint}; "
            "refusing to trust it"
        )
    return pem
