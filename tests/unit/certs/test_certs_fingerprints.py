"""sha256: fingerprints: the format, parsing what people paste, and pin matching."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization

from certs import fingerprint, fingerprint_der, matches, parse_fingerprint

DIGEST = bytes(range(0xE0, 0x100))  # 32 bytes with both letters and digits in hex
PLAIN = "sha256:" + DIGEST.hex()
COLONS = "sha256:" + ":".join(f"{b:02X}" for b in DIGEST)


def test_fingerprint_is_sha256_of_der_in_lowercase_hex(ca) -> None:
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    text = fingerprint(ca.cert)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", text)
    assert text == "sha256:" + hashlib.sha256(der).hexdigest()
    assert fingerprint_der(der) == text


@pytest.mark.parametrize(
    "text",
    [
        PLAIN,
        PLAIN.upper().replace("SHA256", "sha256"),
        COLONS,
        COLONS.lower(),
        "SHA256:" + DIGEST.hex(),
        f"  {COLONS}\n",
    ],
)
def test_parse_accepts_plain_and_openssl_forms(text) -> None:
    assert parse_fingerprint(text) == DIGEST


@pytest.mark.parametrize(
    "text",
    [
        "",
        DIGEST.hex(),  # no prefix
        "sha1:" + DIGEST.hex(),
        "sha256:",
        "sha256:" + DIGEST.hex()[:-2],  # 31 bytes
        "sha256:" + DIGEST.hex() + "00",  # 33 bytes
        "sha256:" + DIGEST.hex()[:-1] + "g",  # not hex
        "sha256:" + DIGEST.hex()[:4] + ":" + DIGEST.hex()[4:],  # colons in some places only
        COLONS + ":",
        COLONS.replace(":", "-"),
        "sha256: " + DIGEST.hex(),
        "sha256:" + " ".join(f"{b:02x}" for b in DIGEST),
        "sha256:" + "\uff10" * 64,  # fullwidth digits are not hex digits here
    ],
)
def test_parse_rejects_malformed_input_with_a_clear_message(text) -> None:
    with pytest.raises(ValueError, match=r"fingerprint must"):
        parse_fingerprint(text)


def test_parse_error_does_not_echo_huge_input() -> None:
    with pytest.raises(ValueError, match="fingerprint must") as info:
        parse_fingerprint("sha256:" + "z" * 10_000)
    assert len(str(info.value)) < 300


def test_matches_the_right_certificate_only(ca, other_ca) -> None:
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    assert matches(der, fingerprint(ca.cert))
    assert matches(der, fingerprint(ca.cert).upper().replace("SHA256", "sha256"))
    assert not matches(der, fingerprint(other_ca.cert))
    assert not matches(der + b"\x00", fingerprint(ca.cert))


def test_matches_raises_on_a_malformed_pin(ca) -> None:
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(ValueError, match="fingerprint must"):
        matches(der, "sha256:nope")
