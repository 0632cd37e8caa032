"""The agent updates itself, for real: two more versions of this agent are built (copies of
its code tree with other version strings, one of them unable to reach the relay), signed
as ``agent`` packages and pushed to an agent run by ``helpline-agent supervise``. The
good one takes over; the broken one is rolled back, and the rollback is reported and
audited. An agent without a supervisor refuses to update itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent as agent_package
from console.client import HelplineClient

from .conftest import BIN, AgentProcess, RelayProcess, async_wait_for, stop_process
from .helpers import audit_entries
from .session_helpers import cli_as_admin, wait_online
from .update_helpers import Publisher, enroll_with_key, new_publisher, push, rollout_id

pytestmark = pytest.mark.integration

SOURCE = Path(agent_package.__file__).resolve().parent.parent
INSTALL = """\
    test -f agent/cli.py && test -f protocol/__init__.py && test -f certs/packages.py
    echo "agent tree for $HELPLINE_PACKAGE_VERSION in place"
"""


def agent_tree(directory: Path, version: str, *, broken: bool = False) -> Path:
    """A copy of this agent's code with ``version`` as its version; ``broken`` ones ask
    the relay for an endpoint that does not exist, so they never connect."""
    tree = directory / f"tree-{version}"
    for name in ("agent", "protocol", "certs"):
        shutil.copytree(SOURCE / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    inventory = tree / "agent" / "inventory.py"
    text = inventory.read_text()
    assert 'AGENT_VERSION = "0.1.0"' in text
    inventory.write_text(text.replace('AGENT_VERSION = "0.1.0"', f'AGENT_VERSION = "{version}"'))
    if broken:
        runner = tree / "agent" / "runner.py"
        text = runner.read_text()
        assert 'AGENT_PATH = "/agent/v1/connect"' in text
        runner.write_text(text.replace('"/agent/v1/connect"', '"/agent/v1/no-such-endpoint"'))
    (tree / "install.sh").write_text(INSTALL)
    return tree


def agent_package_file(publisher: Publisher, directory: Path, tree: Path, version: str) -> Path:
    from .conftest import run_helpline

    out = directory / f"helpline-agent-{version}.hlpkg"
    for args in (
        (
            "package",
            "build",
            str(tree),
            "--name",
            "helpline-agent",
            "--version",
            version,
            "--kind",
            "agent",
            "--platform",
            "linux",
            "--install",
            "sh install.sh",
            "-o",
            str(out),
        ),
        ("package", "sign", str(out), "--key", str(publisher.key)),
    ):
        result = run_helpline(publisher.cli_config, *args)
        assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def supervised() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        yield processes
    finally:
        for process in processes:
            stop_process(process)


def start_supervised(agent: AgentProcess) -> subprocess.Popen[bytes]:
    log = agent.log_path.open("ab")
    return subprocess.Popen(
        [BIN / "helpline-agent", "-v", "supervise", "--config", agent.config_dir],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def device(client: HelplineClient, name: str) -> dict[str, Any]:
    return next(d for d in await client.devices() if d["name"] == name)


async def wait_version(client: HelplineClient, name: str, version: str) -> None:
    async def running() -> bool:
        found = await device(client, name)
        return bool(found["online"] and found["inventory"].get("agent_version") == version)

    await async_wait_for(running, seconds=60, what=f"{name} running agent {version}")


async def result_of(client: HelplineClient, rollout: str, seconds: float = 90) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        body = await client.request("GET", f"/api/v1/updates/rollouts/{rollout}")
        entry = body["devices"][0]
        return entry if entry["state"] in ("succeeded", "failed", "skipped") else None

    found: dict[str, Any] = await async_wait_for(final, seconds=seconds, what="update result")
    return found


async def test_agent_self_update_and_rollback(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    supervised: list[subprocess.Popen[bytes]],
) -> None:
    publisher = new_publisher(tmp_path)
    agent = enroll_with_key(relay, tmp_path, "selfie", publisher, extra={"health_deadline": "8.0"})
    plain = enroll_with_key(relay, tmp_path, "plain", publisher)
    supervised.append(start_supervised(agent))
    plain.start()
    try:
        await wait_online(admin_client, "selfie", "plain")
        await wait_version(admin_client, "selfie", "0.1.0")
        cli = cli_as_admin(relay, tmp_path / "cli")
        good = agent_package_file(publisher, tmp_path, agent_tree(tmp_path, "0.2.0"), "0.2.0")
        broken_tree = agent_tree(tmp_path, "0.3.0", broken=True)
        broken = agent_package_file(publisher, tmp_path, broken_tree, "0.3.0")

        # without a supervisor nothing could restore it: refused
        result = push(cli, good, "--device", "plain", "--wait", "--json")
        entry = json.loads(result.stdout)["devices"][0]
        assert entry["state"] == "failed"
        assert "does not run under 'helpline-agent supervise'" in entry["message"]

        # the good version: installed beside the old one, started, healthy, kept
        result = push(cli, good, "--device", "selfie", "--reason", "agent upgrade")
        assert result.returncode == 0, result.stderr
        entry = await result_of(admin_client, rollout_id(result))
        assert entry["state"] == "succeeded", entry
        assert entry["message"] == "agent 0.2.0 connected and healthy"
        assert "agent tree for 0.2.0 in place" in entry["log_tail"]
        await wait_version(admin_client, "selfie", "0.2.0")
        root = agent.config_dir / "updates" / "agent"

        async def committed() -> bool:  # the supervisor commits as it sees the marker
            state = json.loads((root / "state.json").read_text())
            return bool(state.get("current") == "0.2.0" and state["pending"] is None)

        await async_wait_for(committed, what="0.2.0 committed")
        assert (root / "versions" / "0.2.0" / "agent" / "cli.py").exists()

        # the broken version never connects: after the deadline 0.2.0 is back, and says so
        result = push(cli, broken, "--device", "selfie", "--reason", "bad build")
        entry = await result_of(admin_client, rollout_id(result))
        assert entry["state"] == "failed", entry
        assert "agent 0.3.0 did not connect and report healthy within 8 s" in entry["message"]
        assert "rolled back to 0.2.0" in entry["message"]
        await wait_version(admin_client, "selfie", "0.2.0")
        state = json.loads((root / "state.json").read_text())
        assert state["current"] == "0.2.0" and state["pending"] is None
        assert not (root / "report.json").exists()  # delivered once
        (rollback,) = await audit_entries(admin_client, action="update.rollback")
        assert rollback["target"] == "selfie"
        assert rollback["details"]["version"] == "0.3.0"
        assert "rolled back" in rollback["details"]["message"]
        # the broken build tried for real and was refused by the relay
        assert "relay refused the connection (404" in agent.log()
        assert "rolling back to 0.2.0" in agent.log()

        # versions only move forward: 0.2.0 again is refused by the running 0.2.0
        again = push(cli, good, "--device", "selfie", "--wait", "--json")
        entry = json.loads(again.stdout)["devices"][0]
        assert entry["state"] == "failed"
        assert "not newer than the running 0.2.0" in entry["message"]
    finally:
        plain.stop()
