"""The Helpline side of the session benchmarks: one relay, one real agent, a console.

:class:`HelplineRig` initialises a relay in a temporary directory and starts
``helpline-relay serve`` (the idle-agents benchmark's :class:`RelayUnderTest`: a
high open-files limit, heartbeat timeout of an hour, never outliving the benchmark),
logs the relay's first admin in once (its TOTP code works once) to make a device group
and a technician granted that group alone, enrols one real ``helpline-agent`` into it
with the integration tests' ``enroll_agent`` (consent ``allow`` for the kinds asked,
optional ``[files] roots``) and starts it. Consoles, in this process or another, use the
technician's bearer token; the admin's is kept for the check that needs every device.

Also here: the keystroke echo every benchmark measures the same way
(:func:`open_echo`, :func:`echo_round_trip`), and percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pyotp

from console.client import ConsoleSession, HelplineClient
from console.sessions import SessionChannel
from tests.integration.conftest import BIN, AgentProcess, RelayProcess, enroll_agent

from .idle_agents import BenchError, RelayUnderTest, raise_open_files
from .sshd import ECHO_COMMAND

DEVICE = "bench-target"
#: The target's device group, the only one granted to the benchmark's technician (so its
#: consoles are told about one device, not about every idle agent as well).
GROUP = "bench"
TECHNICIAN = "bench-tech"
_PR_SET_PDEATHSIG = 1


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``samples``."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


class HelplineRig:
    """A relay and one real agent on loopback, in ``directory``; use as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        consent: Sequence[str] = ("shell",),
        file_roots: Sequence[Path] = (),
        open_files: int = 65536,
    ) -> None:
        self.directory = directory
        self.consent = dict.fromkeys(consent, "allow")
        self.file_roots = list(file_roots)
        self.open_files = open_files
        self.relay: RelayUnderTest | None = None
        self.agent: AgentProcess | None = None
        self.token = ""
        self.admin_token = ""
        self.ca_pem = ""

    def __enter__(self) -> HelplineRig:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.relay is not None
        return self.relay.url

    @property
    def relay_pid(self) -> int:
        assert self.relay is not None
        return self.relay.pid

    def start(self) -> None:
        raise_open_files(self.open_files)
        self.relay = relay = RelayUnderTest(self.directory, shared_tls_buffer=True)
        relay.start(self.open_files)
        self.ca_pem = (relay.data / "ca.pem").read_text()
        admin = json.loads((relay.data / "initial-admin.json").read_text())
        technician = asyncio.run(self._prepare(admin))
        # The integration tests' enrolment, against this relay (its admin file gives the
        # CA fingerprint), into the technician's group; the agent heartbeats at its
        # default 30 s.
        view = RelayProcess(relay.data, relay.port, relay.log_path, admin=admin)
        agent = enroll_agent(
            view, self.directory, DEVICE, token=view.enrolment_token(GROUP), heartbeat=30.0,
            consent=self.consent,
        )  # fmt: skip
        if self.file_roots:
            config = agent.config_dir / "agent.toml"
            text = config.read_text()
            if "\nroots = []\n" not in text:
                raise BenchError(f"{config} has no 'roots = []' line; update the benchmark")
            listed = ", ".join(json.dumps(str(root)) for root in self.file_roots)
            config.write_text(text.replace("\nroots = []\n", f"\nroots = [{listed}]\n"))
        libc = ctypes.CDLL(None, use_errno=True)

        def prepare() -> None:  # in the child: never outlive the benchmark
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

        with agent.log_path.open("ab") as log_file:
            agent.process = subprocess.Popen(
                [BIN / "helpline-agent", "run", "--config", agent.config_dir],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                preexec_fn=prepare,
            )  # fmt: skip
        self.agent = agent
        self.token = asyncio.run(self._technician_login(technician))

    async def _prepare(self, admin: dict[str, str]) -> str:
        """The admin logs in once (a TOTP code works once) and makes the technician: a
        password-only account granted the target's group alone. The technician's password."""
        async with HelplineClient(self.url, self.ca_pem) as client:
            await client.login(
                admin["username"], admin["password"], pyotp.TOTP(admin["totp_secret"]).now()
            )
            assert client.token is not None
            self.admin_token = client.token
            await client.create_group(GROUP)
            body = await client.create_user(
                TECHNICIAN, role="technician", full_name="Bench Technician", totp_required=False
            )
            await client.add_grant(TECHNICIAN, GROUP)
            return str(body["password"])

    async def _technician_login(self, password: str) -> str:
        async with HelplineClient(self.url, self.ca_pem) as client:
            await client.login(TECHNICIAN, password)
            await self._until_online(client)
            assert client.token is not None
            return client.token

    async def _until_online(self, client: HelplineClient, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not any(d["name"] == DEVICE and d["online"] for d in await client.devices()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the agent is not online\n{self.agent_log_tail()}")
            await asyncio.sleep(0.05)

    def wait_online(self) -> None:
        """Until the agent is connected (again: after a cut it reconnects by itself)."""

        async def wait() -> None:
            async with self.client() as client:
                await self._until_online(client)

        asyncio.run(wait())

    def client(self, *, admin: bool = False) -> HelplineClient:
        """A new client with the technician's bearer token (the admin's when ``admin``);
        use as ``async with``."""
        return HelplineClient(
            self.url, self.ca_pem, token=self.admin_token if admin else self.token
        )

    def check_alive(self) -> None:
        assert self.relay is not None
        self.relay.check_alive()
        if (
            self.agent is None
            or self.agent.process is None
            or self.agent.process.poll() is not None
        ):
            raise BenchError(f"the agent exited\n{self.agent_log_tail()}")

    def agent_log_tail(self, lines: int = 20) -> str:
        if self.agent is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(self.agent.log().splitlines()[-lines:])
        return ""

    def logs(self) -> str:
        relay = self.relay.log_tail() if self.relay is not None else ""
        return f"relay log tail:\n{relay}\nagent log tail:\n{self.agent_log_tail()}"

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self.relay is not None:
            self.relay.stop()
            self.relay = None


# -- the keystroke echo ------------------------------------------------------------------------


async def open_echo(console: ConsoleSession, device: str = DEVICE) -> SessionChannel:
    """A pty shell session running ``stty raw -echo; cat``, ready to echo each byte once."""
    channel = await asyncio.wait_for(
        console.open_session(device, "shell", params={"command": ECHO_COMMAND, "pty": "1"}), 30
    )
    seen = b""
    async with asyncio.timeout(30):
        while b"R" not in seen:
            data = await channel.read()
            if not data:
                raise BenchError(f"the echo session ended at start: {seen!r}")
            seen += data
    return channel


async def echo_round_trip(
    channel: SessionChannel, byte: bytes = b"x", *, within: float = 5.0
) -> float:
    """Seconds from writing one byte to the session until its echo is read."""
    start = time.perf_counter()
    await channel.write(byte)
    got = b""
    async with asyncio.timeout(within):
        while len(got) < len(byte):
            data = await channel.read()
            if not data:
                raise BenchError("the echo session closed")
            got += data
    elapsed = time.perf_counter() - start
    if got != byte:
        raise BenchError(f"Helpline echoed {got!r}, not {byte!r}")
    return elapsed
