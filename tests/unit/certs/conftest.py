"""Shared fixtures for the PKI tests: one CA, a stranger CA, issued certificates, files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# `pytest` run as a console script does not put the repository root on sys.path and
# pyproject sets no `pythonpath`; make `import certs` work however pytest is started.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from certs import (  # noqa: E402
    build_agent_csr,
    certificate_pem,
    create_ca,
    generate_private_key,
    issue_server_certificate,
    private_key_pem,
    sign_agent_csr,
)

SERVER_NAMES = ("localhost", "relay.example.test", "127.0.0.1", "::1")
DEVICE_ID = "dev-4f2a9c"


@dataclass(frozen=True)
class Issued:
    """A key, its certificate, and both written to disk as PEM."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path


def _save(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{stem}.key"
    cert_path = directory / f"{stem}.pem"
    key_path.write_bytes(private_key_pem(key))
    cert_path.write_bytes(certificate_pem(cert))
    return Issued(key, cert, key_path, cert_path)


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="session")
def ca(pki_dir: Path) -> Issued:
    return _save(pki_dir, "ca", *create_ca("Helpline Test CA"))


@pytest.fixture(scope="session")
def other_ca(pki_dir: Path) -> Issued:
    return _save(pki_dir, "other-ca", *create_ca("Some Other CA"))


@pytest.fixture(scope="session")
def server(ca: Issued, pki_dir: Path) -> Issued:
    return _save(pki_dir, "server", *issue_server_certificate(ca.key, ca.cert, SERVER_NAMES))


def _make_agent(authority: Issued, directory: Path, stem: str, device_id: str) -> Issued:
    key = generate_private_key()
    csr = build_agent_csr(key, "laptop-01")
    return _save(
        directory, stem, key, sign_agent_csr(authority.key, authority.cert, csr, device_id)
    )


@pytest.fixture(scope="session")
def server_names() -> tuple[str, ...]:
    return SERVER_NAMES


@pytest.fixture(scope="session")
def device_id() -> str:
    return DEVICE_ID


@pytest.fixture(scope="session")
def agent(ca: Issued, pki_dir: Path) -> Issued:
    return _make_agent(ca, pki_dir, "agent", DEVICE_ID)


@pytest.fixture(scope="session")
def stranger_agent(other_ca: Issued, pki_dir: Path) -> Issued:
    """An agent certificate signed by a CA the relay does not trust."""
    return _make_agent(other_ca, pki_dir, "stranger-agent", "dev-stranger")


@pytest.fixture(scope="session")
def stranger_server(other_ca: Issued, pki_dir: Path) -> Issued:
    """A server certificate for the right names from the wrong CA."""
    key, cert = issue_server_certificate(other_ca.key, other_ca.cert, SERVER_NAMES)
    return _save(pki_dir, "stranger-server", key, cert)


RunOpenSSL = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def openssl() -> RunOpenSSL:
    """Run the real openssl binary (installed by .ci/run) with the given arguments."""
    binary = shutil.which("openssl")
    assert binary is not None, "the openssl binary is required (apt-get install openssl)"

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
        )

    return run
