"""Certificate fingerprints: ``sha256:<hex>`` of the DER encoding, and pinning checks.

The CA fingerprint is what an admin hands to ``helpline-agent enroll --ca``; the
agent compares it with :func:`matches` before trusting anything the relay sends.
:func:`parse_fingerprint` also accepts the colon-separated form that
``openssl x509 -fingerprint -sha256`` prints, so either can be pasted.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes

__all__ = [
    "FINGERPRINT_PREFIX",
    "fingerprint",
    "fingerprint_der",
    "matches",
    "parse_fingerprint",
]

FINGERPRINT_PREFIX = "sha256:"

_PLAIN_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_COLON_HEX = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")


def fingerprint(cert: x509.Certificate) -> str:
    """``"sha256:"`` followed by the lowercase hex SHA-256 of ``cert``'s DER encoding."""
    return FINGERPRINT_PREFIX + cert.fingerprint(hashes.SHA256()).hex()


def fingerprint_der(cert_der: bytes) -> str:
    """:func:`fingerprint` of a certificate already in DER form (as TLS hands it out)."""
    return FINGERPRINT_PREFIX + hashlib.sha256(cert_der).hexdigest()


def parse_fingerprint(text: str) -> bytes:
    """The 32 raw bytes of a ``sha256:HEX`` fingerprint; :class:`ValueError` if malformed.

    The prefix is case-insensitive; the hex may be upper or lower case, either
    unbroken (64 digits) or as 32 colon-separated pairs. Surrounding whitespace
    is ignored.
    """
    stripped = text.strip()
    if stripped[: len(FINGERPRINT_PREFIX)].lower() != FINGERPRINT_PREFIX:
        raise ValueError(f"fingerprint must start with {FINGERPRINT_PREFIX!r}: {_show(text)}")
    digits = stripped[len(FINGERPRINT_PREFIX) :]
    if _PLAIN_HEX.fullmatch(digits):
        return bytes.fromhex(digits)
    if _COLON_HEX.fullmatch(digits):
        return bytes.fromhex(digits.replace(":", ""))
    raise ValueError(
        "fingerprint must be sha256: followed by 64 hex digits, "
        f"optionally as colon-separated pairs: {_show(text)}"
    )


def matches(cert_der: bytes, expected: str) -> bool:
    """True if the DER certificate has fingerprint ``expected`` (compared in constant time).

    A malformed ``expected`` raises :class:`ValueError` rather than returning
    False: it is a configuration mistake, not a mismatch.
    """
    wanted = parse_fingerprint(expected)
    return hmac.compare_digest(hashlib.sha256(cert_der).digest(), wanted)


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
