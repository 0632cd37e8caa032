"""Idle agents: what N connected, idle agents cost one ``helpline-relay serve`` process.

For each mode (the relay's ``shared_tls_buffer`` on, then off) the benchmark

1. initialises a fresh relay data directory in a temporary folder and starts
   ``helpline-relay serve`` as a subprocess with a high open-files limit;
2. enrols N devices through the real enrolment API (``POST /api/v1/enroll``, one
   multi-use token, a fresh P-256 key and CSR per device);
3. reads the relay's RSS (after a settle), then opens N agent connections: TLS 1.3
   with each device's own client certificate, a WebSocket upgrade of
   ``/agent/v1/connect``, and the real protocol (:class:`protocol.Connection`:
   Hello both ways, then Inventory), timing first connect to the last relay Hello;
4. runs one heartbeat round to be sure the relay has handled every Hello and
   Inventory, lets the relay settle, and reads its RSS again;
5. runs heartbeat rounds (every agent sends one Heartbeat and waits for its
   HeartbeatAck) and reads the relay's CPU time around each round.

The load comes from worker processes (``multiprocessing``, spawn), each owning a
share of the agents and speaking a minimal WebSocket client over
:class:`relay.tls.SharedBufferSSLProtocol`, so the generator neither pays
asyncio's 256 KiB TLS read buffer per connection nor aiohttp's client overhead.
Everything is bounded by timeouts; the relay and workers are stopped on any exit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import dataclasses
import hashlib
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
AGENT_PATH = "/agent/v1/connect"

DEFAULT_AGENTS = 2000
TARGET_AGENTS = 10_000
TARGET_BYTES_PER_AGENT = 64 * 1024
#: Heartbeat rounds measured per mode; the table shows the median.
ROUNDS = 5
#: Seconds the relay is left alone before its RSS is read.
SETTLE_SECONDS = 3.0
#: In-flight connection attempts (TLS handshake to relay Hello) per worker.
CONNECT_CONCURRENCY = 64
#: In-flight enrolment requests per worker.
ENROL_CONCURRENCY = 16
#: The relay drops agents silent for heartbeat_timeout; idle agents here send only the
#: measured rounds, so the bench relays wait an hour instead of 90 s.
BENCH_HEARTBEAT_TIMEOUT = 3600.0

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
_OP_CLOSE, _OP_PING, _OP_PONG = 0x8, 0x9, 0xA
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The benchmark could not run to the end (relay died, agents failed, timeout)."""


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def raise_open_files(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to ``wanted`` (hard limit too if allowed); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- the relay under test -------------------------------------------------------------


class RelayUnderTest:
    """One ``helpline-relay serve`` subprocess with its own data directory."""

    def __init__(self, directory: Path, *, shared_tls_buffer: bool) -> None:
        self.data = directory / "relay"
        self.log_path = directory / "relay.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        result = subprocess.run(
            [BIN / "helpline-relay", "init", "--data", self.data,
             "--listen", f"{HOST}:{self.port}", "--ssh-listen", f"{HOST}:{free_port()}"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise BenchError(f"helpline-relay init failed: {result.stderr.strip()}")
        config = self.data / "relay.toml"
        text = config.read_text()
        for old, new in (
            ("shared_tls_buffer = true", f"shared_tls_buffer = {str(shared_tls_buffer).lower()}"),
            ("heartbeat_timeout = 90.0", f"heartbeat_timeout = {BENCH_HEARTBEAT_TIMEOUT}"),
        ):
            if old not in text:
                raise BenchError(f"{config} has no line {old!r}; update the benchmark")
            text = text.replace(old, new)
        config.write_text(text)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, open_files: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)

        def prepare() -> None:  # in the child, between fork and exec
            raise_open_files(open_files)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the benchmark

        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [BIN / "helpline-relay", "serve", "--data", self.data],
                stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=prepare,
            )  # fmt: skip
        result = subprocess.run(
            [BIN / "helpline-relay", "wait", "--data", self.data, "--timeout", "60"],
            capture_output=True, text=True, check=False, timeout=90,
        )  # fmt: skip
        if result.returncode != 0:
            raise BenchError(f"relay did not come up: {result.stderr.strip()}\n{self.log_tail()}")

    def create_token(self, uses: int) -> str:
        result = subprocess.run(
            [BIN / "helpline-relay", "token", "create", "--data", self.data,
             "--uses", str(uses), "--expires", "7200"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise BenchError(f"token create failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise BenchError(f"the relay exited\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


# -- the generator's WebSocket client ------------------------------------------------


def _apply_mask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    size = len(data)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = os.urandom(4)
    return header + mask + _apply_mask(payload, mask)


class AgentClient(asyncio.Protocol):
    """One agent's WebSocket over TLS, driving a :class:`protocol.Connection`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, inventory: Any) -> None:
        from protocol import Connection, Limits, Role

        self.loop = loop
        self.conn = Connection(Role.AGENT, limits=Limits(), software="helpline-bench/0.1.0")
        self.inventory = inventory
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {AGENT_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.hello: asyncio.Future[None] = loop.create_future()
        self.ack: asyncio.Future[None] | None = None
        self.ack_seq = -1
        self.closing = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            if not self.upgraded and not self._read_upgrade():
                return
            self._read_frames()
        except Exception as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("relay closed the connection"))
        self.transport = None

    # the benchmark's calls

    def send_heartbeat(self, seq: int) -> asyncio.Future[None]:
        from protocol import Heartbeat

        self.ack = self.loop.create_future()
        self.ack_seq = seq
        if self.transport is None:
            self.ack.set_exception(ConnectionError("not connected"))
        else:
            self.conn.send(Heartbeat(seq=seq))
            self._flush()
        return self.ack

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # internals

    def _read_upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > 16384:
                raise ConnectionError("oversized HTTP response")
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise ConnectionError(f"relay refused the upgrade: {head[0]!r}")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + _WS_GUID).digest()).decode()  # noqa: S324
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("wrong Sec-WebSocket-Accept")
        self.upgraded = True
        self._flush()  # our Hello
        return True

    def _read_frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            size, offset = second & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                (size,) = struct.unpack_from("!H", buffer, 2)
                offset = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                (size,) = struct.unpack_from("!Q", buffer, 2)
                offset = 10
            mask = b""
            if second & 0x80:
                mask = bytes(buffer[offset : offset + 4])
                offset += 4
            if len(buffer) < offset + size:
                return
            payload = bytes(buffer[offset : offset + size])
            del buffer[: offset + size]
            if mask:
                payload = _apply_mask(payload, mask)
            self._on_frame(first & 0x80 != 0, first & 0x0F, payload)

    def _on_frame(self, final: bool, opcode: int, payload: bytes) -> None:
        if opcode in (_OP_BINARY, _OP_CONTINUATION):
            self.fragments.append(payload)
            if final:
                message, self.fragments = b"".join(self.fragments), []
                self._on_message(message)
        elif opcode == _OP_PING:
            self._write(ws_frame(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            if not self.closing:
                self.closing = True
                self._write(ws_frame(_OP_CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()
            self._fail(ConnectionError(f"relay closed the WebSocket with code {code}"))
        elif opcode == _OP_TEXT:
            raise ConnectionError("text message from the relay")

    def _on_message(self, message: bytes) -> None:
        from protocol import ChannelOpened, ConnectionClosed, HeartbeatAck, Hello
        from protocol.errors import ErrorCode

        self.conn.receive_data(message)
        for event in self.conn.events_received():
            if isinstance(event, Hello):
                self.conn.send(self.inventory)
                if not self.hello.done():
                    self.hello.set_result(None)
            elif isinstance(event, HeartbeatAck):
                if self.ack is not None and not self.ack.done() and event.seq == self.ack_seq:
                    self.ack.set_result(None)
            elif isinstance(event, ChannelOpened):
                self.conn.reject_channel(event.channel, ErrorCode.NOT_PERMITTED, "bench agent")
            elif isinstance(event, ConnectionClosed):
                self._fail(ConnectionError(f"relay said goodbye: {event.message} ({event.code})"))
        self._flush()

    def _flush(self) -> None:
        frames = self.conn.data_to_send()
        if frames:
            self._write(b"".join(ws_frame(_OP_BINARY, frame) for frame in frames))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, exc: BaseException) -> None:
        if self.closing and isinstance(exc, ConnectionError):
            exc = ConnectionError("closed by the benchmark")
        for future in (self.hello, self.ack):
            if future is not None and not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved here; awaiting it still raises
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.abort()


# -- generator worker processes --------------------------------------------------------


@dataclass
class BenchAgent:
    name: str
    device_id: str
    cert_file: Path
    key_file: Path
    client: AgentClient | None = None


class Worker:
    """One generator process: enrols and drives its share of the agents."""

    def __init__(self, url: str, port: int, ca_pem: str, token: str, names: Sequence[str],
                 directory: Path) -> None:  # fmt: skip
        self.url = url
        self.port = port
        self.ca_pem = ca_pem
        self.token = token
        self.names = names
        self.directory = directory
        self.agents: list[BenchAgent] = []

    async def serve(self, pipe: Pipe) -> None:
        """Answer the parent's commands until it says ``exit`` or goes away."""
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def readable() -> None:
            try:
                while pipe.poll():
                    commands.put_nowait(pipe.recv())
            except (EOFError, OSError):
                loop.remove_reader(pipe.fileno())
                commands.put_nowait(("exit",))

        loop.add_reader(pipe.fileno(), readable)
        try:
            while True:
                command, *args = await commands.get()
                if command == "exit":
                    return
                handler: Callable[..., Any] = getattr(self, f"do_{command}")
                try:
                    pipe.send(("ok", await handler(*args)))
                except Exception as exc:
                    pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(pipe.fileno())
            await self.do_close()

    async def do_enroll(self) -> dict[str, Any]:
        import aiohttp

        from certs.contexts import pinned_client_context

        context = pinned_client_context(self.ca_pem)
        connector = aiohttp.TCPConnector(limit=ENROL_CONCURRENCY, ssl=context)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            results = await asyncio.gather(
                *(self._enroll_one(session, name) for name in self.names), return_exceptions=True
            )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise BenchError(f"{len(failures)} enrolments failed; first: {failures[0]!r}")
        self.agents = [result for result in results if isinstance(result, BenchAgent)]
        return {"enrolled": len(self.agents)}

    async def _enroll_one(self, session: Any, name: str) -> BenchAgent:
        from certs.authority import build_agent_csr
        from certs.keys import generate_private_key, private_key_pem

        key = generate_private_key()
        csr = build_agent_csr(key, name).decode()
        body = {"token": self.token, "csr": csr, "name": name}
        async with session.post(f"{self.url}/api/v1/enroll", json=body) as response:
            answer = await response.json()
            if response.status != 201:
                raise BenchError(f"enrolment of {name} refused ({response.status}): {answer}")
        cert_file = self.directory / f"{name}.pem"
        key_file = self.directory / f"{name}.key"
        cert_file.write_text(answer["certificate"])
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_key_pem(key))
        return BenchAgent(name, answer["device_id"], cert_file, key_file)

    async def do_connect(self, seconds: float) -> dict[str, Any]:
        from agent.inventory import collect_inventory
        from certs.contexts import pinned_client_context

        inventory = collect_inventory()
        contexts = {
            agent.name: pinned_client_context(self.ca_pem, agent.cert_file, agent.key_file)
            for agent in self.agents
        }
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        hello_at: list[float] = []

        async def connect(agent: BenchAgent) -> None:
            async with limit:
                agent_inventory = dataclasses.replace(inventory, hostname=agent.name)
                agent.client = await self._open(contexts[agent.name], agent_inventory)
                await agent.client.hello
                hello_at.append(time.monotonic())

        first = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(connect(agent) for agent in self.agents), return_exceptions=True),
            seconds,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise BenchError(
                f"{len(failures)} of {len(self.agents)} agents failed to connect;"
                f" first: {failures[0]!r}"
            )
        return {"first": first, "last": max(hello_at, default=first), "connected": len(hello_at)}

    async def _open(self, context: Any, inventory: Any) -> AgentClient:
        from relay.tls import SharedBufferSSLProtocol

        loop = asyncio.get_running_loop()
        client = AgentClient(loop, self.port, inventory)
        handshake: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda: SharedBufferSSLProtocol(
                loop, client, context, handshake, server_side=False, server_hostname=HOST,
                ssl_handshake_timeout=60.0,
            ),
            HOST,
            self.port,
        )  # fmt: skip
        await handshake
        return client

    async def do_heartbeat(self, seq: int, seconds: float) -> dict[str, Any]:
        start = time.monotonic()
        acks = [agent.client.send_heartbeat(seq) for agent in self.agents if agent.client]
        if len(acks) != len(self.agents):
            raise BenchError("heartbeat round before every agent connected")
        await asyncio.wait_for(asyncio.gather(*acks), seconds)
        return {"wall": time.monotonic() - start, "acks": len(acks)}

    async def do_close(self) -> dict[str, Any]:
        closed = 0
        for agent in self.agents:
            if agent.client is not None:
                agent.client.abort()
                agent.client = None
                closed += 1
        await asyncio.sleep(0)
        return {"closed": closed}


def _worker_main(pipe: Pipe, open_files: int, arguments: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up on Ctrl-C
    raise_open_files(open_files)
    with contextlib.suppress(ctypes.ArgumentError, OSError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    asyncio.run(Worker(**arguments).serve(pipe))


class WorkerPool:
    """The generator processes, each with a pipe for commands and replies."""

    def __init__(self, count: int, open_files: int, shares: list[dict[str, Any]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for share in shares[:count]:
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(child, open_files, share), daemon=True
            )
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def call(self, command: str, *args: Any, timeout: float) -> list[dict[str, Any]]:
        """Send ``command`` to every worker; their replies, or :class:`BenchError`."""
        for pipe in self.pipes:
            pipe.send((command, *args))
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        for index, pipe in enumerate(self.pipes):
            while not pipe.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                if not self.processes[index].is_alive():
                    raise BenchError(f"generator worker {index} died during {command}")
                if time.monotonic() >= deadline:
                    raise BenchError(f"generator worker {index}: {command} timed out")
            status, value = pipe.recv()
            if status != "ok":
                raise BenchError(f"generator worker {index}: {command}: {value}")
            replies.append(value)
        return replies

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("exit",))
        for process in self.processes:
            process.join(5)  # a worker still busy with a command is killed
            if process.is_alive():
                process.kill()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()
        self.pipes, self.processes = [], []


# -- one measured run --------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    agents: int
    rss_before: int
    rss_after: int
    connect_seconds: float
    enrol_seconds: float
    round_cpu: list[float]
    round_wall: list[float]

    @property
    def rss_per_agent(self) -> float:
        return (self.rss_after - self.rss_before) / self.agents

    @property
    def connections_per_second(self) -> float:
        return self.agents / self.connect_seconds

    @property
    def cpu_per_round(self) -> float:
        return statistics.median(self.round_cpu)


def settled_rss(process: psutil.Process) -> int:
    """The relay's RSS once it has been left alone: the median of a few late samples."""
    time.sleep(SETTLE_SECONDS)
    samples = []
    for _ in range(5):
        samples.append(process.memory_info().rss)
        time.sleep(0.2)
    return int(statistics.median(samples))


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_mode(mode: str, shared: bool, agents: int, workers: int, root: Path) -> Result:
    directory = root / mode
    directory.mkdir()
    open_files = max(65536, agents + 4096)
    raise_open_files(open_files)
    relay = RelayUnderTest(directory, shared_tls_buffer=shared)
    pool: WorkerPool | None = None
    try:
        relay.start(open_files)
        process = psutil.Process(relay.pid)
        token = relay.create_token(agents)
        ca_pem = (relay.data / "ca.pem").read_text()
        names = [f"bench-{index:06d}" for index in range(agents)]
        shares = []
        for index in range(workers):
            folder = directory / f"worker-{index}"
            folder.mkdir(mode=0o700)
            shares.append(
                {"url": relay.url, "port": relay.port, "ca_pem": ca_pem, "token": token,
                 "names": names[index::workers], "directory": folder}
            )  # fmt: skip
        pool = WorkerPool(workers, open_files, shares)

        log(f"[{mode}] enrolling {agents} devices through POST /api/v1/enroll")
        start = time.monotonic()
        pool.call("enroll", timeout=120 + agents * 0.1)
        enrol_seconds = time.monotonic() - start
        relay.check_alive()
        log(f"[{mode}] enrolled in {enrol_seconds:.1f} s; reading the relay's baseline RSS")
        rss_before = settled_rss(process)

        log(f"[{mode}] connecting {agents} agents")
        connect_timeout = 120 + agents * 0.05
        replies = pool.call("connect", connect_timeout, timeout=connect_timeout + 30)
        connect_seconds = max(r["last"] for r in replies) - min(r["first"] for r in replies)
        relay.check_alive()
        round_timeout = 60 + agents * 0.01
        # Every agent sent Hello and Inventory before this heartbeat: once all acks are
        # back, the relay has handled them all.
        pool.call("heartbeat", 1, round_timeout, timeout=round_timeout + 30)
        log(f"[{mode}] connected in {connect_seconds:.1f} s; letting the relay settle")
        rss_after = settled_rss(process)

        round_cpu, round_wall = [], []
        for seq in range(2, 2 + ROUNDS):
            before = cpu_seconds(process)
            replies = pool.call("heartbeat", seq, round_timeout, timeout=round_timeout + 30)
            round_cpu.append(cpu_seconds(process) - before)
            round_wall.append(max(reply["wall"] for reply in replies))
            time.sleep(0.5)
        relay.check_alive()
        log(f"[{mode}] done; closing {agents} connections")
        pool.call("close", timeout=60)
        return Result(
            mode, agents, rss_before, rss_after, connect_seconds, enrol_seconds,
            round_cpu, round_wall,
        )  # fmt: skip
    except BenchError as error:
        raise BenchError(f"[{mode}] {error}\nrelay log tail:\n{relay.log_tail()}") from None
    finally:
        if pool is not None:
            pool.stop()
        relay.stop()


# -- the table ------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            " | ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def report(results: Sequence[Result], load: tuple[float, float]) -> str:
    target_kib = TARGET_BYTES_PER_AGENT // 1024
    headers = [
        "mode", "agents", "relay RSS/agent (KiB)", "conn/s", "CPU per round (ms)",
        "CPU per heartbeat (µs)", "best round (µs/hb)", f"target ≤ {target_kib} KiB/agent",
    ]  # fmt: skip
    rows = []
    for r in results:
        verdict = "PASS" if r.rss_per_agent <= TARGET_BYTES_PER_AGENT else "MISS"
        rows.append(
            [
                r.mode,
                f"{r.agents}",
                f"{r.rss_per_agent / 1024:.1f}",
                f"{r.connections_per_second:.0f}",
                f"{r.cpu_per_round * 1000:.0f}",
                f"{r.cpu_per_round * 1e6 / r.agents:.0f}",
                f"{min(r.round_cpu) * 1e6 / r.agents:.0f}",
                verdict if r.agents >= TARGET_AGENTS else f"{verdict} (n<10k)",
            ]
        )
    details_headers = [
        "mode", "relay RSS before (MiB)", "after (MiB)", "enrol (s)", "connect (s)",
        "round CPU each (ms)", "round wall each (ms)",
    ]  # fmt: skip
    details = [
        [
            r.mode,
            f"{r.rss_before / 2**20:.1f}",
            f"{r.rss_after / 2**20:.1f}",
            f"{r.enrol_seconds:.1f}",
            f"{r.connect_seconds:.1f}",
            " ".join(f"{c * 1000:.0f}" for c in r.round_cpu),
            " ".join(f"{w * 1000:.0f}" for w in r.round_wall),
        ]
        for r in results
    ]
    notes = [
        f"RSS/agent = (relay RSS with all agents connected and idle - before any connected) / N;"
        f" KiB = 1024 bytes.\nCPU per round and per heartbeat: median of {ROUNDS} rounds;"
        " best round: the cheapest one (psutil user+system of the relay process, 10 ms ticks)."
        "\nA round that includes a full garbage collection of the relay costs more"
        " (see tests/bench/README.md).",
        "Load average (1 min) at start and end: {:.1f} / {:.1f}; conn/s and round times"
        " depend on what else runs on the machine.".format(*load),
    ]
    if any(r.agents < TARGET_AGENTS for r in results):
        notes.append(
            f"The target is set at {TARGET_AGENTS:,} agents; run with BENCH_AGENTS={TARGET_AGENTS}."
        )
    return "\n".join(
        [format_table(headers, rows), "", format_table(details_headers, details), "", *notes]
    )


MODES = (("shared TLS buffer", True), ("private TLS buffers", False))


def main() -> int:
    agents = int(os.environ.get("BENCH_AGENTS", DEFAULT_AGENTS))
    workers = int(os.environ.get("BENCH_WORKERS", 2))
    if agents < 1 or workers < 1:
        raise SystemExit("BENCH_AGENTS and BENCH_WORKERS must be positive")
    workers = min(workers, agents)
    print(f"Idle agents: {agents} agents, {workers} generator processes, one relay process")
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="helpline-bench-") as root:
        for mode, shared in MODES:
            results.append(run_mode(mode, shared, agents, workers, Path(root)))
    print(report(results, (load_before, os.getloadavg()[0])), flush=True)
    return 0
