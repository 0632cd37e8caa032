"""Certificate revocation lists: what the relay loads so a revoked agent fails its handshake."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["build_crl"]

#: A CRL is rebuilt on every revocation; this only bounds a forgotten one.
_CRL_LIFETIME = datetime.timedelta(days=3650)


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[tuple[int, datetime.datetime]],
    *,
    now: datetime.datetime | None = None,
) -> bytes:
    """A PEM CRL signed by the CA listing ``(serial, revoked_at)`` pairs (maybe none)."""
    issued = now or datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(issued - datetime.timedelta(minutes=5))
        .next_update(issued + _CRL_LIFETIME)
    )
    for serial, revoked_at in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)
