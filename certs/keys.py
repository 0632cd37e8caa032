"""Private keys: ECDSA P-256 generation, PKCS#8 PEM encoding and loading.

Every key in Helpline's PKI (CA, relay TLS, agent client) is ECDSA on the NIST
P-256 curve: browsers accept it for TLS and it is small and fast. Loading refuses
any other key type or curve so a wrong file is caught where it is read.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["generate_private_key", "is_p256", "load_private_key", "private_key_pem"]


def is_p256(key: object) -> bool:
    """True if ``key`` is an ECDSA P-256 public or private key."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return isinstance(key.curve, ec.SECP256R1)
    return False


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM. Write it with :func:`certs.files.write_secret`."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(data: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted PEM private key; :class:`ValueError` unless it is ECDSA P-256."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # raised for a password-protected key
        raise ValueError("private key is encrypted; Helpline keys are not") from exc
    except UnsupportedAlgorithm as exc:
        raise ValueError("private key uses an unsupported algorithm") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not is_p256(key):
        raise ValueError("private key is not ECDSA P-256")
    return key
