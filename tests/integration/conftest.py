"""Fixtures that start the real programs on loopback: ``helpline-relay serve`` and
``helpline-agent run`` as subprocesses, the console library in-process and the
``helpline`` CLI as a subprocess. Nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
import pytest_asyncio

from console.client import HelplineClient

BIN = Path(sys.executable).parent


#: Ports tests hand to the programs they start: below the kernel's ephemeral range
#: (32768+, where outgoing connections take theirs), one block of them per pytest-xdist
#: worker, so two workers never pick the same port between checking it and binding it.
PORT_BLOCK = 500
FIRST_PORT = 20000
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next_ports = itertools.cycle(
    range(FIRST_PORT + _WORKER * PORT_BLOCK, FIRST_PORT + (_WORKER + 1) * PORT_BLOCK)
)


def free_port() -> int:
    """A loopback port that is free now, from this worker's own block."""
    for _ in range(PORT_BLOCK):
        port = next(_next_ports)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in this worker's block of {PORT_BLOCK}")


def wait_for(
    predicate: Callable[[], bool], *, seconds: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; bounded, fails with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def async_wait_for(
    predicate: Callable[[], Any], *, seconds: float = 20.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def totp_now(secret: str, *, step_offset: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return (
        totp.generate_otp(totp.timecode(time.time()) + step_offset) if step_offset else totp.now()
    )


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, a bounded wait, then SIGKILL."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class RelayProcess:
    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    admin: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        return (self.data_dir / "ca.pem").read_text()

    @property
    def ca_fingerprint(self) -> str:
        return str(self.admin["ca_fingerprint"])

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [BIN / "helpline-relay", "serve", "--data", self.data_dir],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        result = subprocess.run(
            [BIN / "helpline-relay", "wait", "--data", self.data_dir, "--timeout", "30"],
            capture_output=True,
            check=False,
        )
        assert result.returncode == 0, self.log_path.read_text()

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a local ``helpline-relay`` operator command against this data dir."""
        result = subprocess.run(
            [BIN / "helpline-relay", *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def enrolment_token(self, group: str = "default", uses: int = 1) -> str:
        result = self.cli(
            "token", "create", "--data", self.data_dir, "--group", group, "--uses", str(uses)
        )
        return result.stdout.strip()


def init_relay(directory: Path) -> RelayProcess:
    port = free_port()
    ssh_port = free_port()
    data = directory / "relay"
    result = subprocess.run(
        [
            BIN / "helpline-relay",
            "init",
            "--data",
            data,
            "--listen",
            f"127.0.0.1:{port}",
            "--ssh-listen",
            f"127.0.0.1:{ssh_port}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # Tests want fast failure detection: agents silent for 6 s are dropped.
    toml = (
        (data / "relay.toml")
        .read_text()
        .replace("heartbeat_timeout = 90.0", "heartbeat_timeout = 6.0")
    )
    (data / "relay.toml").write_text(toml)
    relay = RelayProcess(data, port, directory / "relay.log")
    relay.admin = json.loads((data / "initial-admin.json").read_text())
    return relay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = init_relay(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@dataclass
class AgentProcess:
    config_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def device_id(self) -> str:
        text = (self.config_dir / "agent.toml").read_text()
        return text.split('device_id = "', 1)[1].split('"', 1)[0]

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [BIN / "helpline-agent", "-v", "run", "--config", self.config_dir],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def bash_without_login_files(directory: Path) -> Path:
    """A shell program for test agents: bash that reads no profile and no rc file."""
    program = directory / "bash-without-login-files"
    if not program.exists():
        program.write_text('#!/bin/bash\nexec /bin/bash --noprofile --norc "$@"\n')
        program.chmod(0o755)
    return program


def enroll_agent(
    relay: RelayProcess,
    directory: Path,
    name: str,
    *,
    token: str | None = None,
    heartbeat: float = 1.0,
    consent: dict[str, str] | None = None,
    prompt_timeout: float | None = None,
    shell: str | None = None,
) -> AgentProcess:
    """Enrol an agent named ``name`` into ``relay``; its config is made quick for tests.

    Its shell sessions run ``shell`` (``""``: the agent user's login shell, as in
    production). The default is bash without the machine's own login files, so the
    tests do not depend on them: a root ``~/.bashrc`` that runs ``pyenv init``, say,
    takes seconds under load before a shell reads its first command.
    """
    if shell is None:
        shell = str(bash_without_login_files(directory))
    config = directory / f"agent-{name}"
    result = subprocess.run(
        [
            BIN / "helpline-agent",
            "enroll",
            relay.url,
            "--token",
            token or relay.enrolment_token(),
            "--ca-fingerprint",
            relay.ca_fingerprint,
            "--config",
            config,
            "--name",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    toml = (config / "agent.toml").read_text()
    toml = toml.replace("heartbeat_interval = 30.0", f"heartbeat_interval = {heartbeat}")
    toml = toml.replace("backoff_max = 60.0", "backoff_max = 2.0")
    toml = toml.replace("backoff_initial = 1.0", "backoff_initial = 0.2")
    for kind, policy in (consent or {}).items():
        toml = re.sub(rf'^{kind} = "\w+"$', f'{kind} = "{policy}"', toml, flags=re.MULTILINE)
    if prompt_timeout is not None:
        toml = toml.replace("prompt_timeout = 30.0", f"prompt_timeout = {prompt_timeout}")
    if shell:
        toml = toml.replace('\nprogram = ""\n', f'\nprogram = "{shell}"\n')
    (config / "agent.toml").write_text(toml)
    return AgentProcess(config, directory / f"agent-{name}.log")


@pytest.fixture
def start_agent(relay: RelayProcess, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(name: str = "demo", **kwargs: Any) -> AgentProcess:
        agent = enroll_agent(relay, tmp_path, name, **kwargs)
        agent.start()
        agents.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in agents:
            agent.stop()


@pytest_asyncio.fixture
async def admin_client(relay: RelayProcess) -> AsyncIterator[HelplineClient]:
    """The first admin, logged in through the REST API with a real TOTP code."""
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login(
            relay.admin["username"], relay.admin["password"], totp_now(relay.admin["totp_secret"])
        )
        yield client


def run_helpline(
    config_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``helpline`` CLI with its own config directory."""
    env = {**os.environ, "HELPLINE_CONFIG": str(config_dir)}
    return subprocess.run(
        [BIN / "helpline", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
