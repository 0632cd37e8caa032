"""Update pushes to one device: install, results and audit; versions only move forward;
what the device refuses (unknown key, altered package), what the relay refuses (unsigned,
payload not matching, no grant). Real relay, real agents, the real CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from certs.packages import MAGIC, read_header_file
from console.client import HelplineClient

from .conftest import RelayProcess, run_helpline
from .helpers import audit_entries, logged_in, new_user
from .session_helpers import cli_as_admin, technician, wait_online
from .update_helpers import (
    enroll_with_key,
    new_publisher,
    push,
    rollout,
    rollout_id,
    wait_rollout,
)

pytestmark = pytest.mark.integration

WRITE_MARKER = """\
    echo "installing $HELPLINE_PACKAGE_NAME $HELPLINE_PACKAGE_VERSION"
    cat payload.txt
    echo "$HELPLINE_PACKAGE_VERSION" > ../../../../installed-$HELPLINE_PACKAGE_NAME.txt
"""


async def test_push_to_a_device_installs_reports_and_audits(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    publisher = new_publisher(tmp_path)
    agent = enroll_with_key(relay, tmp_path, "desk", publisher)
    agent.start()
    try:
        await wait_online(admin_client, "desk")
        cli = cli_as_admin(relay, tmp_path / "cli")
        package = publisher.package(
            tmp_path, "notes", "1.2.0", WRITE_MARKER, files={"payload.txt": "hello payload"}
        )
        result = push(cli, package, "--device", "desk", "--reason", "ticket 7", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "state: completed" in result.stdout
        row = next(line for line in result.stdout.splitlines() if line.startswith("desk"))
        assert row.split()[:4] == ["desk", "1", "succeeded", "0"]
        assert "installed notes 1.2.0" in row
        marker = agent.config_dir / "installed-notes.txt"
        assert marker.read_text() == "1.2.0\n"
        installed = json.loads((agent.config_dir / "updates" / "installed.json").read_text())
        assert installed["packages"]["notes"]["version"] == "1.2.0"
        assert (agent.config_dir / "updates" / "installed.json").stat().st_mode & 0o777 == 0o600
        # the temporary directory is gone
        assert list((agent.config_dir / "updates" / "tmp").iterdir()) == []

        body = await rollout(admin_client, rollout_id(result))
        device = body["devices"][0]
        assert device["state"] == "succeeded"
        assert "hello payload" in device["log_tail"]
        assert "installing notes 1.2.0" in device["log_tail"]

        actions = [e["action"] for e in await audit_entries(admin_client, target="desk")]
        for action in ("session.request", "session.consent", "session.start", "update.sent"):
            assert action in actions
        for action in ("update.verified", "update.installing", "update.result", "session.end"):
            assert action in actions
        (verified,) = await audit_entries(admin_client, action="update.verified", target="desk")
        assert "notes 1.2.0 signed by sha256:" in verified["details"]["message"]
        (result_entry,) = await audit_entries(admin_client, action="update.result", target="desk")
        assert result_entry["actor"] == relay.admin["username"]
        assert result_entry["details"]["state"] == "succeeded"
        assert result_entry["details"]["exit_code"] == 0
        (pushed,) = await audit_entries(admin_client, action="update.push")
        assert pushed["target"] == "device:desk"
        assert pushed["details"]["reason"] == "ticket 7"
        assert pushed["details"]["signer"].startswith("sha256:")
        assert await audit_entries(admin_client, action="update.complete")

        # the same version again, then an older one: refused by the device, nothing run
        marker.write_text("untouched\n")
        again = push(cli, package, "--device", "desk", "--wait")
        assert again.returncode == 2
        assert "failed" in again.stdout
        assert "same as the installed version 1.2.0" in again.stdout
        older = publisher.package(
            tmp_path, "notes", "1.1.9", WRITE_MARKER, files={"payload.txt": "old"}
        )
        refused = push(cli, older, "--device", "desk", "--wait", "--json")
        body = json.loads(refused.stdout)
        assert body["state"] == "halted"
        assert "older than the installed version 1.2.0" in body["devices"][0]["message"]
        assert "deliberate downgrade" in body["devices"][0]["message"]
        assert marker.read_text() == "untouched\n"
        # a deliberate downgrade is allowed
        downgrade = push(cli, older, "--device", "desk", "--downgrade", "--wait")
        assert downgrade.returncode == 0, downgrade.stdout
        assert marker.read_text() == "1.1.9\n"
        # the agent served other sessions all along: it is still online
        assert any(d["online"] for d in await admin_client.devices() if d["name"] == "desk")

        # where the machine's administrator refuses downgrades, the relay's flag is not enough
        agent.stop()
        toml = agent.config_dir / "agent.toml"
        toml.write_text(
            toml.read_text().replace("accept_downgrades = true", "accept_downgrades = false")
        )
        agent.start()
        await wait_online(admin_client, "desk")
        oldest = publisher.package(
            tmp_path, "notes", "1.0", WRITE_MARKER, files={"payload.txt": "oldest"}
        )
        refused = push(cli, oldest, "--device", "desk", "--downgrade", "--wait", "--json")
        device = json.loads(refused.stdout)["devices"][0]
        assert device["state"] == "failed"
        assert "older than the installed version 1.1.9" in device["message"]
        assert marker.read_text() == "1.1.9\n"
    finally:
        agent.stop()


def _tampered(package: Path, out: Path) -> Path:
    """The payload changed and the manifest's hash updated to match: the form is right,
    the relay cannot tell, the signature no longer fits."""
    header = read_header_file(package)
    data = package.read_bytes()
    payload = bytearray(data[header.payload_offset :])
    payload[len(payload) // 2] ^= 0x01
    import hashlib

    manifest = json.loads(header.manifest_bytes)
    manifest["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    signature = data[len(MAGIC) + 4 + len(header.manifest_bytes) : header.payload_offset]
    out.write_bytes(
        MAGIC + struct.pack(">I", len(manifest_bytes)) + manifest_bytes + signature + bytes(payload)
    )
    return out


async def test_what_the_device_and_the_relay_refuse(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    publisher = new_publisher(tmp_path)
    stranger = new_publisher(tmp_path, "stranger")
    agent = enroll_with_key(relay, tmp_path, "desk", publisher)
    keyless = enroll_with_key(relay, tmp_path, "keyless", None)
    tiny = enroll_with_key(relay, tmp_path, "tiny", publisher, extra={"max_package_size": "100"})
    agent.start()
    keyless.start()
    tiny.start()
    try:
        await wait_online(admin_client, "desk", "keyless", "tiny")
        cli = cli_as_admin(relay, tmp_path / "cli")

        # signed by a key the agent does not pin: the relay takes it, the device refuses it
        foreign = stranger.package(tmp_path, "tool", "1.0", WRITE_MARKER)
        result = push(cli, foreign, "--device", "desk", "--wait", "--json")
        device = json.loads(result.stdout)["devices"][0]
        assert device["state"] == "failed"
        assert "refused by the device" in device["message"]
        assert "unknown key sha256:" in device["message"]

        # an agent with no key pinned installs nothing, and says so before any transfer
        good = publisher.package(tmp_path, "tool", "1.1", WRITE_MARKER)
        result = push(cli, good, "--device", "keyless", "--wait", "--json")
        device = json.loads(result.stdout)["devices"][0]
        assert device["state"] == "failed"
        assert "trusts no publisher key" in device["message"]

        # for another platform: refused after verification, nothing run
        windows = tmp_path / "windows"
        windows.mkdir()
        (windows / "install.sh").write_text("echo never\n")
        built = run_helpline(
            publisher.cli_config,
            "package",
            "build",
            str(windows),
            "--name",
            "tool",
            "--version",
            "1.5",
            "--platform",
            "win32",
            "--install",
            "sh install.sh",
            "-o",
            str(tmp_path / "win.hlpkg"),
        )
        assert built.returncode == 0, built.stderr
        signed = run_helpline(
            publisher.cli_config,
            "package",
            "sign",
            str(tmp_path / "win.hlpkg"),
            "--key",
            str(publisher.key),
        )
        assert signed.returncode == 0, signed.stderr
        result = push(cli, tmp_path / "win.hlpkg", "--device", "desk", "--wait", "--json")
        device = json.loads(result.stdout)["devices"][0]
        assert device["state"] == "failed"
        assert "the package is for win32, not linux" in device["message"]

        # larger than the agent accepts: refused before consent and before any transfer
        result = push(cli, good, "--device", "tiny", "--wait", "--json")
        device = json.loads(result.stdout)["devices"][0]
        assert device["state"] == "failed"
        assert "larger than this agent accepts (100 bytes)" in device["message"]

        # payload changed and manifest hash fixed up: form fine, signature broken
        tampered = _tampered(good, tmp_path / "tampered.hlpkg")
        result = push(cli, tampered, "--device", "desk", "--wait", "--json")
        device = json.loads(result.stdout)["devices"][0]
        assert device["state"] == "failed"
        assert "signature does not match its manifest" in device["message"]
        assert not (agent.config_dir / "installed-tool.txt").exists()

        # the relay refuses what is unusable before any device sees it
        unsigned = publisher.package(tmp_path, "tool", "1.2", WRITE_MARKER, sign=False)
        cli_refusal = push(cli, unsigned, "--device", "desk")
        assert cli_refusal.returncode == 1
        assert "not signed" in cli_refusal.stderr
        with pytest.raises(Exception, match="not signed"):
            await admin_client.upload("/api/v1/updates/packages", unsigned)
        byte_changed = tmp_path / "byte.hlpkg"
        data = bytearray(good.read_bytes())
        data[-10] ^= 0x01
        byte_changed.write_bytes(bytes(data))
        with pytest.raises(Exception, match="payload does not match"):
            await admin_client.upload("/api/v1/updates/packages", byte_changed)
        with pytest.raises(Exception, match="bad magic"):
            await admin_client.upload("/api/v1/updates/packages", tmp_path / "publisher.key.pub")

        # the good one still installs: nothing above harmed the agent or the relay
        result = push(cli, good, "--device", "desk", "--wait")
        assert result.returncode == 0, result.stdout
        assert (agent.config_dir / "installed-tool.txt").read_text() == "1.1\n"
    finally:
        agent.stop()
        keyless.stop()
        tiny.stop()


async def test_technicians_push_only_where_they_hold_grants(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    publisher = new_publisher(tmp_path)
    await admin_client.create_group("lab")
    agent = enroll_with_key(relay, tmp_path, "lab-1", publisher, token=relay.enrolment_token("lab"))
    agent.start()
    try:
        await wait_online(admin_client, "lab-1")
        package = publisher.package(tmp_path, "tool", "1.0", WRITE_MARKER)
        outsider = await technician(admin_client, "olga", group="default")
        async with logged_in(relay, outsider) as olga:
            uploaded = await olga.upload("/api/v1/updates/packages", package)
            for target in ({"group": "lab"}, {"device": "lab-1"}):
                with pytest.raises(Exception, match=r"grant|no device"):
                    await olga.request(
                        "POST",
                        "/api/v1/updates/rollouts",
                        json={"package": uploaded["sha256"], **target},
                    )
        denied = await audit_entries(admin_client, action="api.denied")
        assert any(e["actor"] == "olga" and "updates" in e["target"] for e in denied)
        assert not await audit_entries(admin_client, action="update.push")

        auditor = await new_user(admin_client, "audrey", role="auditor")
        async with logged_in(relay, auditor) as audrey:
            with pytest.raises(Exception, match="needs the admin or technician role"):
                await audrey.upload("/api/v1/updates/packages", package)
            with pytest.raises(Exception, match="needs the admin or technician role"):
                await audrey.request("GET", "/api/v1/updates/rollouts")

        insider = await technician(admin_client, "ivan", group="lab")
        async with logged_in(relay, insider) as ivan:
            uploaded = await ivan.upload("/api/v1/updates/packages", package)
            body = await ivan.request(
                "POST",
                "/api/v1/updates/rollouts",
                json={"package": uploaded["sha256"], "group": "lab", "reason": "patch"},
            )
            done = await wait_rollout(ivan, body["id"])
            assert done["state"] == "completed"
            assert done["created_by"] == "ivan"
            listing = await ivan.request("GET", "/api/v1/updates/rollouts")
            assert [r["id"] for r in listing["rollouts"]] == [body["id"]]
        (entry,) = await audit_entries(admin_client, action="update.result")
        assert entry["actor"] == "ivan"
        sessions = await audit_entries(admin_client, action="session.start")
        assert any(e["actor"] == "ivan" and e["details"]["kind"] == "update" for e in sessions)
    finally:
        agent.stop()


async def test_a_console_cannot_open_update_sessions_itself(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    publisher = new_publisher(tmp_path)
    agent = enroll_with_key(relay, tmp_path, "desk", publisher)
    agent.start()
    try:
        await wait_online(admin_client, "desk")
        async with admin_client.connect() as console:
            with pytest.raises(Exception, match="opened by rollouts"):
                await console.open_session("desk", "update")
        refused = await audit_entries(admin_client, action="session.refused")
        assert refused and refused[-1]["details"]["kind"] == "update"
        result = run_helpline(tmp_path / "nobody", "update", "list")
        assert result.returncode == 1 and "not logged in" in result.stderr
    finally:
        agent.stop()
