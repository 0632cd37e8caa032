"""``helpline-agent enroll``: pin the relay CA, make a key and CSR, get a certificate.

Order matters: the CA is fetched and checked against the fingerprint the
admin gave *before* the enrolment token is sent anywhere, so a token never
goes to an impostor. The private key is generated here and never leaves the
machine (0600); the relay signs only its public half.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from certs.authority import build_agent_csr, device_id_of, load_certificate
from certs.bootstrap import fetch_pinned_ca
from certs.contexts import pinned_client_context
from certs.files import write_public, write_secret
from certs.keys import generate_private_key, private_key_pem
from certs.packages import load_public_key, public_key_pem
from protocol.errors import Conflict, error_from_code

from .config import TEMPLATE, AgentConfig, load_config


def post_json(url: str, path: str, body: dict[str, str], context: ssl.SSLContext) -> dict:  # type: ignore[type-arg]
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, timeout=30, context=context
    )
    try:
        connection.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = json.loads(response.read(1024 * 1024) or b"{}")
    finally:
        connection.close()
    if response.status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise error_from_code(int(error.get("code", 4000)), str(error.get("message", "error")))
    return data  # type: ignore[no-any-return]


def enroll(
    url: str,
    token: str,
    ca_fingerprint: str,
    directory: Path,
    name: str | None = None,
    publisher_keys: Sequence[Path] = (),
) -> AgentConfig:
    if (directory / "agent.toml").exists():
        raise Conflict(f"{directory} already holds an enrolled agent; use another --config")
    # Read (and check) the publisher keys before anything is sent or written.
    keys = [public_key_pem(load_public_key(Path(p).read_bytes())) for p in publisher_keys]
    url = url.rstrip("/")
    ca_pem = fetch_pinned_ca(url, ca_fingerprint)
    device_name = name or socket.gethostname().split(".")[0]
    key = generate_private_key()
    csr = build_agent_csr(key, device_name).decode()
    answer = post_json(
        url,
        "/api/v1/enroll",
        {"token": token, "csr": csr, "name": device_name},
        pinned_client_context(ca_pem),
    )
    certificate = load_certificate(str(answer["certificate"]).encode())
    device_id = device_id_of(certificate)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret(directory / "agent.key", private_key_pem(key))
    write_public(directory / "agent.pem", str(answer["certificate"]).encode())
    write_public(directory / "ca.pem", ca_pem.encode())
    key_files = []
    for number, pem in enumerate(keys, start=1):
        write_public(directory / f"publisher-{number}.pem", pem)
        key_files.append(f"publisher-{number}.pem")
    text = TEMPLATE.format(
        url=url,
        device_id=device_id,
        name=answer["name"],
        publisher_keys=json.dumps(key_files),
    )
    write_public(directory / "agent.toml", text.encode())
    return load_config(directory)
