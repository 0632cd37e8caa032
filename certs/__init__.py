"""Helpline's PKI: the relay's CA, its TLS certificate, agent enrolment and fingerprints.

* :mod:`certs.keys`: ECDSA P-256 private keys, PEM in and out.
* :mod:`certs.authority`: CA creation, server certificates, agent CSRs and
  their signing, device ids in certificates, certificate PEM/DER loading.
* :mod:`certs.fingerprints`: ``sha256:`` fingerprints and constant-time pinning.
* :mod:`certs.files`: secret (0600, never overwritten) and public (0644,
  atomic) file writes.
* :mod:`certs.errors`: :class:`CertificateRequestError`.

Built on ``cryptography``; no sockets, no asyncio. See ``DESIGN.md`` section 3.
"""

from .authority import (
    DEVICE_URI_PREFIX,
    build_agent_csr,
    certificate_pem,
    create_ca,
    device_id_of,
    issue_server_certificate,
    load_certificate,
    sign_agent_csr,
    validate_device_id,
)
from .errors import CertificateRequestError
from .files import write_public, write_secret
from .fingerprints import fingerprint, fingerprint_der, matches, parse_fingerprint
from .keys import generate_private_key, load_private_key, private_key_pem

__all__ = [
    "DEVICE_URI_PREFIX",
    "CertificateRequestError",
    "build_agent_csr",
    "certificate_pem",
    "create_ca",
    "device_id_of",
    "fingerprint",
    "fingerprint_der",
    "generate_private_key",
    "issue_server_certificate",
    "load_certificate",
    "load_private_key",
    "matches",
    "parse_fingerprint",
    "private_key_pem",
    "sign_agent_csr",
    "validate_device_id",
    "write_public",
    "write_secret",
]
