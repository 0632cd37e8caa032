"""ECDSA P-256 keys: generation, PKCS#8 PEM, and refusing other key types on load."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certs import generate_private_key, load_private_key, private_key_pem
from certs.keys import is_p256


def test_generated_keys_are_p256_and_distinct() -> None:
    first, second = generate_private_key(), generate_private_key()
    assert isinstance(first.curve, ec.SECP256R1)
    assert is_p256(first)
    assert is_p256(first.public_key())
    assert first.private_numbers() != second.private_numbers()


def test_pem_is_unencrypted_pkcs8_and_round_trips() -> None:
    key = generate_private_key()
    pem = private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not "EC PRIVATE KEY"
    assert load_private_key(pem).private_numbers() == key.private_numbers()


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), id="rsa"
        ),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
    ],
)
def test_load_refuses_other_key_types(make_key) -> None:
    pem = make_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert not is_p256(make_key())
    with pytest.raises(ValueError, match="not ECDSA P-256"):
        load_private_key(pem)


def test_load_refuses_an_encrypted_key() -> None:
    pem = generate_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="encrypted"):
        load_private_key(pem)


def test_load_refuses_garbage() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's own message
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
