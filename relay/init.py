"""``helpline-relay init``: a new data directory with everything a relay needs.

Creates, refusing to touch a directory that already holds a relay: the CA and
the relay's TLS certificate (``relay.pki``), an empty CRL, an Ed25519 SSH host
key for the gateway, ``relay.toml`` with documented defaults, the SQLite
database with its schema, a ``default`` device group, and the first admin,
whose password and TOTP secret are shown once and kept in
``initial-admin.json`` (0600) until that admin's first successful login, which
removes it (:mod:`relay.auth`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certs.files import write_public, write_secret

from .audit import AuditLog
from .auth import hash_password, new_totp_secret, totp_uri
from .config import TEMPLATE, load_config
from .models import UserRole
from .pki import RelayPKI
from .store import open_store

#: Files whose presence means "a relay lives here": init refuses to continue.
_MARKERS = ("relay.toml", "relay.db", "ca.key", "server.key", "ssh_host_ed25519_key")


@dataclass(frozen=True, slots=True)
class InitialAdmin:
    user_id: int
    username: str
    password: str
    totp_secret: str
    totp_uri: str
    url: str
    ca_fingerprint: str
    ssh_host_key_fingerprint: str


class AlreadyInitialised(Exception):
    pass


def default_names() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    if hostname and hostname not in names:
        names.append(hostname)
    return names


def create_ssh_host_key(path: Path) -> str:
    """Write an Ed25519 host key (OpenSSH format, 0600); return its SHA256 fingerprint."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    write_secret(path, private)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_public(path.with_name(path.name + ".pub"), public + b"\n")
    return ssh_fingerprint(public)


def ssh_fingerprint(public_openssh: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of an ``ssh-ed25519 AAAA...`` line."""
    blob = base64.b64decode(public_openssh.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


async def init_data_dir(
    data_dir: Path,
    *,
    names: list[str] | None = None,
    listen: str = "127.0.0.1:8443",
    ssh_listen: str = "127.0.0.1:2222",
    admin_username: str = "admin",
) -> InitialAdmin:
    existing = [name for name in _MARKERS if (data_dir / name).exists()]
    if existing:
        raise AlreadyInitialised(
            f"{data_dir} already holds a relay ({', '.join(existing)}); refusing to overwrite"
        )
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    host, _, port = listen.rpartition(":")
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]")  # noqa: S104
    if ":" in public_host:
        public_host = f"[{public_host}]"
    public_url = f"https://{public_host}:{port}"

    RelayPKI.create(data_dir, names or default_names())
    host_key_fingerprint = create_ssh_host_key(data_dir / "ssh_host_ed25519_key")
    write_secret(
        data_dir / "relay.toml",
        TEMPLATE.format(listen=listen, public_url=public_url, ssh_listen=ssh_listen).encode(),
    )
    config = load_config(data_dir)
    pki = RelayPKI(data_dir)

    store = await open_store(config.store_url)
    try:
        audit_log = AuditLog(store, data_dir / "audit-head.json")
        await audit_log.record(
            "relay", "relay.init", str(data_dir), ca_fingerprint=pki.ca_fingerprint
        )
        await store.create_group("default")
        await audit_log.record("relay", "group.create", "default")
        password = secrets.token_urlsafe(15)
        totp_secret = new_totp_secret()
        admin_user = await store.create_user(
            admin_username,
            "Administrator",
            UserRole.ADMIN,
            await hash_password(password),
            totp_secret,
            totp_required=True,
        )
        await audit_log.record("relay", "user.create", admin_username, role="admin")
    finally:
        await store.close()

    admin = InitialAdmin(
        user_id=admin_user.id,
        username=admin_username,
        password=password,
        totp_secret=totp_secret,
        totp_uri=totp_uri(totp_secret, admin_username),
        url=public_url,
        ca_fingerprint=pki.ca_fingerprint,
        ssh_host_key_fingerprint=host_key_fingerprint,
    )
    write_secret(data_dir / "initial-admin.json", json.dumps(asdict(admin), indent=2).encode())
    return admin
