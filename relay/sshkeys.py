"""OpenSSH public key lines: parsing, checking and fingerprinting (``SHA256:...``).

RSA keys are taken only with a modulus of at least :data:`MIN_RSA_BITS` bits
(NIST SP 800-57 puts 2048-bit RSA at 112-bit strength, below what the rest of
Helpline uses); shorter ones are refused with a clear error when they are added.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from protocol.errors import InvalidMessage

ALLOWED_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "rsa-sha2-256",
        "rsa-sha2-512",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


#: The smallest RSA modulus accepted, in bits.
MIN_RSA_BITS = 3072


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    """One SSH wire ``string`` (RFC 4251 section 5) at ``offset``, and the offset after it."""
    if offset + 4 > len(blob):
        raise InvalidMessage("the key's data is cut short")
    length = int.from_bytes(blob[offset : offset + 4], "big")
    end = offset + 4 + length
    if end > len(blob):
        raise InvalidMessage("the key's data is cut short")
    return blob[offset + 4 : end], end


def rsa_bits(blob: bytes) -> int:
    """The modulus size of an ``ssh-rsa`` key blob (string type, mpint e, mpint n)."""
    _, offset = _read_string(blob, 0)
    _, offset = _read_string(blob, offset)
    modulus, _ = _read_string(blob, offset)
    return int.from_bytes(modulus, "big").bit_length()


def check_key_strength(key_type: str, blob: bytes) -> None:
    """Refuse an RSA key shorter than :data:`MIN_RSA_BITS`, saying what to use instead."""
    if key_type == "ssh-rsa" or key_type.startswith("rsa-sha2"):
        bits = rsa_bits(blob)
        if bits < MIN_RSA_BITS:
            raise InvalidMessage(
                f"this RSA key has {bits} bits; the relay takes RSA keys of at least"
                f" {MIN_RSA_BITS} bits (better: ssh-keygen -t ed25519)"
            )


def strong_enough(blob: bytes) -> bool:
    """Whether a key blob (as an SSH client offers it) passes :func:`check_key_strength`:
    the gateway also refuses short RSA keys registered before they were refused here."""
    try:
        key_type, _ = _read_string(blob, 0)
        check_key_strength(key_type.decode(errors="replace"), blob)
    except InvalidMessage:
        return False
    return True


def fingerprint_blob(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(line: str) -> tuple[str, str, str, str]:
    """``(type, base64 blob, fingerprint, comment)`` of an authorized_keys style line."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in ALLOWED_TYPES:
        raise InvalidMessage("not an OpenSSH public key line (e.g. 'ssh-ed25519 AAAA... me@host')")
    key_type, encoded = parts[0], parts[1]
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage("the key's base64 part is damaged") from None
    # The blob starts with its own type name: a mismatch means a pasted-together line.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode(errors="replace") != (
        "ssh-rsa" if key_type.startswith("rsa-sha2") else key_type
    ):
        raise InvalidMessage("the key's type does not match its data")
    check_key_strength(key_type, blob)
    comment = parts[2].strip()[:64] if len(parts) > 2 else ""
    return key_type, encoded, fingerprint_blob(blob), comment
