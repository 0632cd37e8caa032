"""TLS client contexts that trust only a pinned Helpline CA (agents and consoles)."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["pinned_client_context"]


def pinned_client_context(
    ca_pem: str, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """TLS 1.3 only, trusting ``ca_pem`` and nothing else; optionally presenting a
    client certificate (an agent's mTLS identity)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=ca_pem)
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context
