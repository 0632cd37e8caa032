"""Adding SSH keys for the gateway with the real ``helpline keys add`` and real keys from
``ssh-keygen``: RSA keys below 3072 bits are refused with a clear error (whatever type
name the line uses), 3072-bit RSA and Ed25519 keys are taken, and a refusal leaves the
keys already registered alone."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from console.client import HelplineClient
from protocol.errors import ErrorCode

from .conftest import RelayProcess, run_helpline
from .helpers import api, audit_entries, cli_login, new_user, relay_db
from .test_ssh_gateway import SshClient, ssh, technician, text

pytestmark = pytest.mark.integration

__all__ = ["ssh"]  # the fixture, imported for this module's tests

REFUSED_2048 = (
    "this RSA key has 2048 bits; the relay takes RSA keys of at least 3072 bits"
    " (better: ssh-keygen -t ed25519)"
)


def keygen(directory: Path, name: str, *options: str) -> Path:
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", *options, "-N", "", "-C", name, "-f", path], check=True, timeout=60
    )
    return path.with_suffix(".pub")


async def test_rsa_keys_below_3072_bits_are_refused(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    tina = await new_user(admin_client, "tina", totp_required=False)
    config = tmp_path / "tina-cli"
    cli_login(relay, config, "tina", tina.password, "")
    ed25519 = keygen(tmp_path, "id_ed25519", "-t", "ed25519")
    rsa_2048 = keygen(tmp_path, "id_rsa_2048", "-t", "rsa", "-b", "2048")
    rsa_3072 = keygen(tmp_path, "id_rsa_3072", "-t", "rsa", "-b", "3072")

    added = run_helpline(config, "keys", "add", str(ed25519), "--name", "laptop")
    assert added.returncode == 0, added.stderr

    refused = run_helpline(config, "keys", "add", str(rsa_2048), "--name", "old-rsa")
    assert refused.returncode != 0
    assert refused.stderr == f"helpline: {REFUSED_2048}\n"
    # The same key under the rsa-sha2-* names is the same key: refused too, as a bad request.
    status, login = await api(
        relay,
        "POST",
        "/api/v1/login",
        body={"username": "tina", "password": tina.password, "otp": ""},
    )
    assert status == 200, login
    _, blob, _ = rsa_2048.read_text().split()
    for key_type in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"):
        status, body = await api(
            relay,
            "POST",
            "/api/v1/keys",
            token=login["token"],
            body={"public_key": f"{key_type} {blob} old", "name": f"old-{key_type}"},
        )
        assert (status, body) == (
            400,
            {"error": {"code": ErrorCode.INVALID_MESSAGE, "message": REFUSED_2048}},
        )

    accepted = run_helpline(config, "keys", "add", str(rsa_3072), "--name", "new-rsa")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("added new-rsa SHA256:")

    listed = run_helpline(config, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = sorted(k["name"] for k in json.loads(listed.stdout))
    assert names == ["laptop", "new-rsa"]
    added_audit = await audit_entries(admin_client, action="key.add")
    assert sorted(e["details"]["name"] for e in added_audit) == ["laptop", "new-rsa"]


async def test_a_short_rsa_key_registered_before_is_refused_at_the_gateway(
    relay: RelayProcess, admin_client: HelplineClient, ssh: SshClient, tmp_path: Path
) -> None:
    """A 2048-bit key in the database from before the refusal (written there directly)
    no longer logs in; the user's Ed25519 key still does."""
    tina = await technician(relay, admin_client, ssh, "tina")
    rsa_2048 = keygen(tmp_path, "id_rsa_2048", "-t", "rsa", "-b", "2048")
    key_type, blob, _ = rsa_2048.read_text().split()
    fingerprint = "SHA256:" + base64.b64encode(
        hashlib.sha256(base64.b64decode(blob)).digest()
    ).decode().rstrip("=")
    with relay_db(relay) as db:
        db.execute(
            "INSERT INTO ssh_keys (user_id, name, public_key, fingerprint, created_at)"
            " VALUES ((SELECT id FROM users WHERE username = 'tina'), ?, ?, ?, ?)",
            ("old-rsa", f"{key_type} {blob}", fingerprint, time.time()),
        )

    refused = ssh.run("tina:nowhere", rsa_2048.with_suffix(""), "true")
    assert refused.returncode == 255
    assert "Permission denied" in text(refused.stderr)
    # The same account's Ed25519 key logs in (and the broker then says there is no device).
    allowed = ssh.run("tina:nowhere", tina.key, "true")
    assert "Permission denied" not in text(allowed.stderr), text(allowed.stderr)
    logins = await audit_entries(admin_client, action="ssh.login")
    assert [e["details"]["key_name"] for e in logins] == ["tina-laptop"]
