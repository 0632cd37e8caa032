"""Rollouts to groups with real agents: batches, the halt on failures, install commands
that fail or hang past their timeout, consent denied, a device lost mid-install, devices
served when they come back, expiry and cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.client import HelplineClient

from .conftest import AgentProcess, RelayProcess, run_helpline
from .helpers import audit_entries
from .session_helpers import cli_as_admin, pgrep, wait_online
from .update_helpers import (
    Publisher,
    by_device,
    enroll_with_key,
    new_publisher,
    push,
    rollout_id,
    start_headless,
    wait_device_state,
    wait_rollout,
)

pytestmark = pytest.mark.integration

FAILS_ON_NODE_D = """\
    echo "installing on $(basename "$(cd ../../../.. && pwd)")"
    case "$PWD" in
        */agent-node-d/*) echo "disk full on node-d" >&2; exit 3;;
    esac
    echo ok > ../../../../installed.txt
    echo done
"""


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    return new_publisher(tmp_path)


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.stop()


def fleet(
    relay: RelayProcess,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
    names: list[str],
    group: str = "fleet",
    **kwargs: object,
) -> list[AgentProcess]:
    token = relay.enrolment_token(group, uses=len(names))
    made = [enroll_with_key(relay, tmp_path, n, publisher, token=token, **kwargs) for n in names]  # type: ignore[arg-type]
    agents.extend(made)
    return made


async def test_five_agents_in_batches_of_two_halt_after_the_failure(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    names = ["node-a", "node-b", "node-c", "node-d", "node-e"]
    for agent in fleet(relay, tmp_path, publisher, agents, names):
        agent.start()
    await wait_online(admin_client, *names)
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "agent-tools", "2.0.1", FAILS_ON_NODE_D)

    result = push(cli, package, "--group", "fleet", "--batch", "2", "--max-failures", "0", "--wait")
    assert result.returncode == 2, result.stdout + result.stderr  # halted
    status = run_helpline(cli, "update", "status", rollout_id(result)[:8])
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert "state: halted  (1 failed, more than the limit of 0)" in status.stdout
    rows = {line.split()[0]: line for line in lines if line.startswith("node-")}
    assert rows["node-a"].split()[:4] == ["node-a", "1", "succeeded", "0"]
    assert rows["node-b"].split()[:4] == ["node-b", "1", "succeeded", "0"]
    assert rows["node-c"].split()[:4] == ["node-c", "2", "succeeded", "0"]
    assert rows["node-d"].split()[:4] == ["node-d", "2", "failed", "3"]
    assert "exited with status 3" in rows["node-d"]
    assert rows["node-d"].rstrip().endswith("disk full on node-d")
    assert rows["node-e"].split()[:4] == ["node-e", "3", "skipped", "-"]
    assert "skipped: rollout halted (1 failed, more than the limit of 0)" in rows["node-e"]

    body = json.loads(run_helpline(cli, "update", "status", rollout_id(result), "--json").stdout)
    devices = by_device(body)
    assert "installing on agent-node-d" in devices["node-d"]["log_tail"]
    assert body["counts"] == {"succeeded": 3, "failed": 1, "skipped": 1}
    for name in ("node-a", "node-b", "node-c"):
        assert (tmp_path / f"agent-{name}" / "installed.txt").read_text() == "ok\n"
    for name in ("node-d", "node-e"):
        assert not (tmp_path / f"agent-{name}" / "installed.txt").exists()

    # batch 2 was sent only once batch 1 had its results; node-e was never sent
    entries = await audit_entries(admin_client)
    seq = {
        (e["action"], e["target"]): e["seq"]
        for e in entries
        if e["action"] in ("update.sent", "update.result")
    }
    first_batch_done = max(seq[("update.result", "node-a")], seq[("update.result", "node-b")])
    assert seq[("update.sent", "node-c")] > first_batch_done
    assert seq[("update.sent", "node-d")] > first_batch_done
    assert ("update.sent", "node-e") not in seq
    (halt,) = [e for e in entries if e["action"] == "update.halt"]
    assert halt["details"]["skipped"] == 1 and halt["details"]["failed"] == 1

    listing = run_helpline(cli, "update", "list")
    assert "failed=1 skipped=1 succeeded=3" in listing.stdout
    assert "halted" in listing.stdout
    # every agent is still connected
    assert {d["name"] for d in await admin_client.devices() if d["online"]} >= set(names)


HANGS = """\
    echo "starting a long install"
    sleep 67.25
"""


async def test_an_install_that_hangs_is_killed_reported_and_halts_the_rollout(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    names = ["hang-1", "hang-2"]
    for agent in fleet(relay, tmp_path, publisher, agents, names):
        agent.start()
    await wait_online(admin_client, *names)
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "slow", "1.0", HANGS)
    result = push(cli, package, "--group", "fleet", "--batch", "1", "--timeout", "2", "--json")
    assert result.returncode == 0, result.stderr
    body = await wait_rollout(admin_client, rollout_id(result))
    devices = by_device(body)
    assert body["state"] == "halted"
    assert devices["hang-1"]["state"] == "failed"
    assert "ran past its timeout of 2 s and was killed" in devices["hang-1"]["message"]
    assert "starting a long install" in devices["hang-1"]["log_tail"]
    assert devices["hang-2"]["state"] == "skipped"
    # the install's process group is gone
    assert pgrep("sleep 67.25") == []
    (entry,) = await audit_entries(admin_client, action="update.result", target="hang-1")
    assert "timeout" in entry["details"]["message"]


async def test_failures_up_to_the_limit_let_the_rollout_go_on(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    names = ["node-c", "node-d", "node-e"]
    for agent in fleet(relay, tmp_path, publisher, agents, names):
        agent.start()
    await wait_online(admin_client, *names)
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "tools", "1.0", FAILS_ON_NODE_D)
    result = push(
        cli,
        package,
        "--group",
        "fleet",
        "--percent",
        "34",
        "--max-failures",
        "1",
        "--wait",
        "--json",
    )
    body = json.loads(result.stdout)
    assert body["batch_size"] == 2  # ceil(3 * 34%)
    assert body["state"] == "completed"
    assert body["counts"] == {"succeeded": 2, "failed": 1}


async def test_consent_denied_is_a_failure(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    # the machine's policy asks the user, and nobody is there: denied
    agent = enroll_with_key(relay, tmp_path, "kiosk", publisher, consent={"update": "prompt"})
    agents.append(start_headless(agent))
    await wait_online(admin_client, "kiosk")
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "tool", "1.0", FAILS_ON_NODE_D)
    result = push(cli, package, "--device", "kiosk", "--wait", "--json")
    device = json.loads(result.stdout)["devices"][0]
    assert device["state"] == "failed"
    assert device["message"].startswith("consent denied on the device")
    (consent,) = await audit_entries(admin_client, action="session.consent", target="kiosk")
    assert consent["details"]["granted"] is False
    assert not (agent.config_dir / "installed.txt").exists()


async def test_a_device_lost_mid_install(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    names = ["lost-1", "lost-2"]
    lost, other = fleet(relay, tmp_path, publisher, agents, names)
    lost.start()
    other.start()
    await wait_online(admin_client, *names)
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "slow", "1.0", "echo begin\nsleep 60\n")
    result = push(cli, package, "--group", "fleet", "--batch", "1", "--max-failures", "0")
    rollout = rollout_id(result)
    await wait_device_state(admin_client, rollout, "lost-1", "installing")
    lost.stop()
    body = await wait_rollout(admin_client, rollout)
    devices = by_device(body)
    assert body["state"] == "halted"
    assert devices["lost-1"]["state"] == "failed"
    assert "went offline during the update" in devices["lost-1"]["message"]
    assert devices["lost-2"]["state"] == "skipped"
    ends = await audit_entries(admin_client, action="session.end", target="lost-1")
    assert ends[-1]["details"]["reason"] == "agent lost"
    # the other agent was not disturbed
    await wait_online(admin_client, "lost-2")


async def test_offline_devices_get_it_when_they_return_until_the_rollout_expires(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    names = ["away-a", "away-b", "away-c"]
    online, returning, gone = fleet(relay, tmp_path, publisher, agents, names)
    online.start()
    await wait_online(admin_client, "away-a")
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "tool", "3.0", FAILS_ON_NODE_D)
    result = push(cli, package, "--group", "fleet", "--batch", "1", "--expires", "20")
    rollout = rollout_id(result)
    await wait_device_state(admin_client, rollout, "away-a", "succeeded")
    waiting = await wait_device_state(admin_client, rollout, "away-b", "pending")
    assert "offline" in waiting["message"]
    returning.start()
    done = await wait_device_state(admin_client, rollout, "away-b", "succeeded")
    assert done["exit_code"] == 0
    body = await wait_rollout(admin_client, rollout, seconds=40)
    devices = by_device(body)
    assert body["state"] == "expired"
    assert devices["away-c"]["state"] == "skipped"
    assert devices["away-c"]["message"] == (
        "skipped: rollout expired (devices still offline at the expiry)"
    )
    assert gone.process is None
    assert await audit_entries(admin_client, action="update.expire")


async def test_cancel_skips_what_was_not_sent(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    fleet(relay, tmp_path, publisher, agents, ["off-1", "off-2"])  # never started
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "tool", "1.0", FAILS_ON_NODE_D)
    result = push(cli, package, "--group", "fleet")
    rollout = rollout_id(result)
    cancelled = run_helpline(cli, "update", "cancel", rollout[:6])
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    body = await wait_rollout(admin_client, rollout)
    assert body["state"] == "cancelled"
    assert {d["state"] for d in body["devices"]} == {"skipped"}
    (entry,) = await audit_entries(admin_client, action="update.cancel")
    assert entry["details"]["skipped"] == 2
    unknown = run_helpline(cli, "update", "status", "ffffffff")
    assert unknown.returncode == 1 and "no rollout matches" in unknown.stderr


async def test_a_rollout_survives_a_relay_restart(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    first, later = fleet(relay, tmp_path, publisher, agents, ["keep-a", "keep-b"])
    first.start()
    await wait_online(admin_client, "keep-a")
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "tool", "5.0", FAILS_ON_NODE_D)
    rollout = rollout_id(push(cli, package, "--group", "fleet", "--batch", "1"))
    await wait_device_state(admin_client, rollout, "keep-a", "succeeded")
    await wait_device_state(admin_client, rollout, "keep-b", "pending")
    relay.stop()
    relay.start()
    later.start()
    body = await wait_rollout(admin_client, rollout)
    assert body["state"] == "completed"
    assert {d["state"] for d in body["devices"]} == {"succeeded"}
    assert (tmp_path / "agent-keep-b" / "installed.txt").read_text() == "ok\n"


async def test_a_relay_restart_mid_install_is_recorded_as_unknown(
    relay: RelayProcess,
    admin_client: HelplineClient,
    tmp_path: Path,
    publisher: Publisher,
    agents: list[AgentProcess],
) -> None:
    await admin_client.create_group("fleet")
    (agent,) = fleet(relay, tmp_path, publisher, agents, ["midway"])
    agent.start()
    await wait_online(admin_client, "midway")
    cli = cli_as_admin(relay, tmp_path / "cli")
    package = publisher.package(tmp_path, "slow", "1.0", "echo begin\nsleep 63.5\n")
    rollout = rollout_id(push(cli, package, "--device", "midway"))
    await wait_device_state(admin_client, rollout, "midway", "installing")
    relay.stop()
    relay.start()
    body = await wait_rollout(admin_client, rollout)
    assert body["state"] == "halted"
    assert body["devices"][0]["state"] == "failed"
    assert body["devices"][0]["message"] == "the relay restarted during the update"
    # the agent stopped the install with the session, and came back
    await wait_online(admin_client, "midway")
    assert pgrep("sleep 63.5") == []
