"""The README's quick start, for real: init, serve, enrol an agent, log in with the CLI,
see the agent online, and the audit trail of it all verifies."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from .conftest import AgentProcess, RelayProcess, run_helpline, totp_now, wait_for


def _login(relay: RelayProcess, config: Path) -> None:
    result = run_helpline(
        config,
        "login",
        relay.url,
        "--user",
        relay.admin["username"],
        "--password-stdin",
        "--otp",
        totp_now(relay.admin["totp_secret"]),
        "--ca-fingerprint",
        relay.ca_fingerprint,
        stdin=relay.admin["password"] + "\n",
    )
    assert result.returncode == 0, result.stderr


def test_cli_login_and_devices_shows_agent_online(
    relay: RelayProcess, start_agent: object, tmp_path: Path
) -> None:
    agent: AgentProcess = start_agent("demo-agent")  # type: ignore[operator]
    config = tmp_path / "cli"
    _login(relay, config)
    credentials = config / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert relay.admin["password"] not in credentials.read_text()

    def online() -> bool:
        result = run_helpline(config, "devices", "--json")
        assert result.returncode == 0, result.stderr
        devices = json.loads(result.stdout)
        return any(d["name"] == "demo-agent" and d["online"] for d in devices)

    wait_for(online, what="demo agent online in 'helpline devices'")
    table = run_helpline(config, "devices").stdout
    assert "demo-agent" in table and "online" in table
    device = json.loads(run_helpline(config, "devices", "--json").stdout)[0]
    assert device["id"] == agent.device_id
    assert device["inventory"]["agent_version"] == "0.1.0"
    assert device["inventory"]["hostname"]

    verify = run_helpline(config, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    actions = [
        e["action"] for e in json.loads(run_helpline(config, "audit", "list", "--json").stdout)
    ]
    assert {"relay.init", "user.create", "token.create", "device.enroll", "user.login"} <= set(
        actions
    )


def test_init_refuses_existing_data_dir(relay: RelayProcess) -> None:
    before = (relay.data_dir / "ca.key").read_bytes()
    result = relay.cli("init", "--data", relay.data_dir, check=False)
    assert result.returncode != 0
    assert "refusing to overwrite" in result.stderr
    assert (relay.data_dir / "ca.key").read_bytes() == before


def test_init_secret_files_are_private(relay: RelayProcess) -> None:
    for name in ("ca.key", "server.key", "ssh_host_ed25519_key", "initial-admin.json", "relay.db"):
        mode = stat.S_IMODE((relay.data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
