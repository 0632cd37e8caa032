"""Helpers for the update tests: a publisher's key and packages made with the real
``helpline package`` CLI, agents enrolled with ``--publisher-key``, rollouts followed
through the REST API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.client import HelplineClient

from .conftest import BIN, AgentProcess, RelayProcess, async_wait_for, run_helpline


@dataclass
class Publisher:
    key: Path
    public: Path
    cli_config: Path  # a HELPLINE_CONFIG directory (package commands need no login)

    def package(
        self,
        directory: Path,
        name: str,
        version: str,
        script: str,
        *,
        kind: str = "software",
        sign: bool = True,
        files: dict[str, str] | None = None,
    ) -> Path:
        """A package whose install command runs ``script`` with sh, built and signed with
        the real CLI."""
        source = directory / f"src-{name}-{version}"
        source.mkdir(parents=True)
        (source / "install.sh").write_text(textwrap.dedent(script))
        for relative, text in (files or {}).items():
            (source / relative).write_text(text)
        out = directory / f"{name}-{version}.hlpkg"
        result = run_helpline(
            self.cli_config,
            "package",
            "build",
            str(source),
            "--name",
            name,
            "--version",
            version,
            "--kind",
            kind,
            "--install",
            "sh install.sh",
            "-o",
            str(out),
        )
        assert result.returncode == 0, result.stderr
        if sign:
            result = run_helpline(
                self.cli_config, "package", "sign", str(out), "--key", str(self.key)
            )
            assert result.returncode == 0, result.stderr
        return out


def new_publisher(directory: Path, name: str = "publisher") -> Publisher:
    config = directory / f"cli-{name}"
    config.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    result = run_helpline(config, "package", "keygen", str(key))
    assert result.returncode == 0, result.stderr
    assert "key id:      sha256:" in result.stdout
    return Publisher(key, directory / f"{name}.key.pub", config)


def enroll_with_key(
    relay: RelayProcess,
    directory: Path,
    name: str,
    publisher: Publisher | None,
    *,
    token: str | None = None,
    consent: dict[str, str] | None = None,
    install_timeout: float | None = None,
    extra: dict[str, str] | None = None,
) -> AgentProcess:
    """``helpline-agent enroll ... --publisher-key``, then the test tunings of
    :func:`conftest.enroll_agent` (fast heartbeats and reconnects)."""
    config = directory / f"agent-{name}"
    command = [
        str(BIN / "helpline-agent"),
        "enroll",
        relay.url,
        "--token",
        token or relay.enrolment_token(),
        "--ca-fingerprint",
        relay.ca_fingerprint,
        "--config",
        str(config),
        "--name",
        name,
    ]
    if publisher is not None:
        command += ["--publisher-key", str(publisher.public)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    toml = (config / "agent.toml").read_text()
    toml = toml.replace("heartbeat_interval = 30.0", "heartbeat_interval = 1.0")
    toml = toml.replace("backoff_max = 60.0", "backoff_max = 1.0")
    toml = toml.replace("backoff_initial = 1.0", "backoff_initial = 0.2")
    for kind, policy in (consent or {"update": "allow"}).items():
        toml = re.sub(rf'^{kind} = "\w+"$', f'{kind} = "{policy}"', toml, flags=re.MULTILINE)
    if install_timeout is not None:
        toml = toml.replace("install_timeout = 600.0", f"install_timeout = {install_timeout}")
    for key, value in (extra or {}).items():
        toml = re.sub(rf"^{key} = .*$", f"{key} = {value}", toml, flags=re.MULTILINE)
    (config / "agent.toml").write_text(toml)
    return AgentProcess(config, directory / f"agent-{name}.log")


def start_headless(agent: AgentProcess) -> AgentProcess:
    """Run the agent with nobody at the machine (no display, no terminal)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")
    }
    with agent.log_path.open("ab") as log:
        agent.process = subprocess.Popen(
            [BIN / "helpline-agent", "-v", "run", "--config", agent.config_dir],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return agent


def push(config: Path, package: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helpline(config, "update", "push", str(package), *args)


def rollout_id(result: subprocess.CompletedProcess[str]) -> str:
    if result.stdout.lstrip().startswith("{"):
        return str(json.loads(result.stdout)["id"])
    match = re.search(r"rollout ([0-9a-f]{32})", result.stdout)
    assert match, (result.stdout, result.stderr)
    return match.group(1)


async def rollout(client: HelplineClient, rollout_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await client.request("GET", f"/api/v1/updates/rollouts/{rollout_id}")
    return body


async def wait_rollout(
    client: HelplineClient, rollout_id: str, *, state: str | None = None, seconds: float = 60
) -> dict[str, Any]:
    """The rollout once it left ``running`` (or reached ``state``)."""

    async def done() -> dict[str, Any] | None:
        body = await rollout(client, rollout_id)
        if state is not None:
            return body if body["state"] == state else None
        return body if body["state"] != "running" else None

    result: dict[str, Any] = await async_wait_for(done, seconds=seconds, what="rollout")
    return result


async def wait_device_state(
    client: HelplineClient, rollout_id: str, device: str, state: str, seconds: float = 60
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body = await rollout(client, rollout_id)
        for entry in body["devices"]:
            if entry["device_name"] == device and entry["state"] == state:
                return dict(entry)
        return None

    result: dict[str, Any] = await async_wait_for(
        reached, seconds=seconds, what=f"{device} {state}"
    )
    return result


def by_device(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["device_name"]: d for d in body["devices"]}
