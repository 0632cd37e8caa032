"""OpenSSH public key lines: parsing, checking and fingerprinting (``SHA256:...``)."""

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
    comment = parts[2].strip()[:64] if len(parts) > 2 else ""
    return key_type, encoded, fingerprint_blob(blob), comment
