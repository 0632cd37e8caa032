"""The relay's PKI on disk: the CA that signs agents, the TLS identity, the CRL.

Files in the data directory (private keys 0600):
``ca.pem``/``ca.key``, ``server.pem``/``server.key``, ``crl.pem``.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from certs.authority import (
    certificate_pem,
    create_ca,
    issue_server_certificate,
    load_certificate,
    sign_agent_csr,
)
from certs.files import write_public, write_secret
from certs.fingerprints import fingerprint
from certs.keys import load_private_key, private_key_pem
from certs.revocation import build_crl

from .tls import server_context


class RelayPKI:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ca_file = data_dir / "ca.pem"
        self.ca_key_file = data_dir / "ca.key"
        self.cert_file = data_dir / "server.pem"
        self.key_file = data_dir / "server.key"
        self.crl_file = data_dir / "crl.pem"
        self.ca_pem = self.ca_file.read_text()
        self.ca_cert = load_certificate(self.ca_pem.encode())
        self._ca_key = load_private_key(self.ca_key_file.read_bytes())
        self.ca_fingerprint = fingerprint(self.ca_cert)
        self._context: ssl.SSLContext | None = None

    @staticmethod
    def create(data_dir: Path, names: Sequence[str]) -> None:
        """Write a new CA, server certificate and empty CRL into ``data_dir``."""
        ca_key, ca_cert = create_ca("Helpline CA")
        server_key, server_cert = issue_server_certificate(ca_key, ca_cert, names)
        write_secret(data_dir / "ca.key", private_key_pem(ca_key))
        write_public(data_dir / "ca.pem", certificate_pem(ca_cert))
        write_secret(data_dir / "server.key", private_key_pem(server_key))
        write_public(data_dir / "server.pem", certificate_pem(server_cert))
        write_public(data_dir / "crl.pem", build_crl(ca_key, ca_cert, []))

    def sign_agent(self, csr_pem: bytes, device_id: str, days: int) -> x509.Certificate:
        return sign_agent_csr(self._ca_key, self.ca_cert, csr_pem, device_id, valid_days=days)

    def update_crl(self, revoked: Sequence[tuple[str, float]]) -> None:
        """Rewrite the CRL from ``(serial hex, revoked_at)`` and use it for new handshakes."""
        entries = [
            (int(serial, 16), datetime.datetime.fromtimestamp(at, tz=datetime.UTC))
            for serial, at in revoked
        ]
        crl = build_crl(self._ca_key, self.ca_cert, entries)
        temporary = self.crl_file.with_suffix(".tmp")
        temporary.write_bytes(crl)
        os.replace(temporary, self.crl_file)
        self._context = None

    def context(self) -> ssl.SSLContext:
        """The server TLS context, rebuilt after each CRL change."""
        if self._context is None:
            self._context = server_context(
                self.cert_file, self.key_file, self.ca_file, self.crl_file
            )
        return self._context
