"""``initial-admin.json`` (the first admin's password and TOTP secret) is removed after
that admin's first successful login, audited; ``helpline-relay init`` and ``info`` (what
``make run`` prints) say so. Failed logins and other users' logins leave it in place."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from console.client import HelplineClient
from protocol.errors import AuthError

from .conftest import BIN, RelayProcess, free_port, totp_now
from .helpers import audit_entries, relay_db

pytestmark = pytest.mark.integration


def test_init_says_the_file_goes_away_after_the_first_login(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    result = subprocess.run(
        [BIN / "helpline-relay", "init", "--data", data, "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "First admin (shown once; also in initial-admin.json, mode 0600, which the relay"
        " removes after this admin's first successful login):"
    ) in result.stdout
    admin = json.loads((data / "initial-admin.json").read_text())
    assert admin["username"] == "admin"
    assert isinstance(admin["user_id"], int)


async def test_the_first_admins_first_login_removes_initial_admin_json(
    relay: RelayProcess,
) -> None:
    path = relay.data_dir / "initial-admin.json"
    admin = relay.admin
    info = relay.cli("info", "--data", relay.data_dir)
    assert f"Admin login           admin / {admin['password']}" in info.stdout
    assert f"({path} is removed after admin's first successful login:" in info.stdout

    # Another account, put straight into the database (no admin has logged in yet).
    with relay_db(relay) as db:
        db.execute(
            "INSERT INTO users (username, full_name, role, password_hash, totp_required,"
            " created_at) VALUES ('ops', 'Ops', 'admin', ?, 0, ?)",
            (PasswordHasher().hash("ops-password-1234"), time.time()),
        )
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login("ops", "ops-password-1234", "")
        assert (await client.me())["username"] == "ops"
    assert path.exists(), "another admin's login leaves it"

    async with HelplineClient(relay.url, relay.ca_pem) as client:
        with pytest.raises(AuthError):
            await client.login("admin", admin["password"] + "x", totp_now(admin["totp_secret"]))
    assert path.exists(), "a failed login leaves it"

    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login("admin", admin["password"], totp_now(admin["totp_secret"]))
        assert not path.exists()
        removed = await audit_entries(client, action="relay.initial_admin_removed")
        assert [(e["actor"], e["target"], e["details"]) for e in removed] == [
            ("relay", "initial-admin.json", {"username": "admin"})
        ]
        # A later login adds nothing; the admin works on.
        async with HelplineClient(relay.url, relay.ca_pem) as other:
            await other.login(
                "admin", admin["password"], totp_now(admin["totp_secret"], step_offset=1)
            )
        assert len(await audit_entries(client, action="relay.initial_admin_removed")) == 1
        assert (await client.me())["username"] == "admin"
        assert (await client.verify_audit()).ok

    info = relay.cli("info", "--data", relay.data_dir)
    assert admin["password"] not in info.stdout
    assert "initial-admin.json is gone: removed at the first login" in info.stdout
    assert not [p.name for p in relay.data_dir.iterdir() if "initial-admin" in p.name]
