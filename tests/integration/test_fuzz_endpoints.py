"""Stateful fuzzing of the relay's endpoints after a valid handshake.

Hypothesis drives sequences (``RuleBasedStateMachine``) against a real relay on loopback:

* :class:`ProtocolMachine` holds a technician's console connection (bearer token) and a
  forged agent (a device's real certificate, no agent program behind it) at once. It asks
  for sessions of every kind on the forged device and on a real one, answers the relay's
  channel opens however it likes, and sends every message type of the protocol, valid or
  not, on known and unknown channels, from either side, plus raw garbage and data frames.
* :class:`WebSocketMachine` signs in to the web console once and opens the browser's
  sockets (shell, screen, files, events) with the cookie and Origin a page would send,
  then sends JSON and binary messages of every shape the pages use, and worse.

After every step: whatever the relay closed, it closed with a coded reason (never an
abnormal close), and it still answers. At the end of each test, a real agent's shell
session works, the relay process is alive, and its log holds no unhandled exception.

The budget is small in ``make test`` (``HELPLINE_FUZZ_EXAMPLES``, default 25 sequences);
``make fuzz`` runs the long mode. Each test prints how many inputs it sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import protocol  # noqa: F401  (registers every message type)
from certs.contexts import pinned_client_context
from console.client import HelplineClient
from protocol.errors import ErrorCode
from protocol.frames import FrameKind, FrameParser, encode_frame
from protocol.messages import Message, message_types
from protocol.sessions import SessionRequest

from .conftest import AgentProcess, RelayProcess, enroll_agent, init_relay, totp_now
from .helpers import RawLink, admin_token, raw_agent_link, raw_console_link, rest
from .session_helpers import read_to_end

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("HELPLINE_FUZZ_EXAMPLES", "25"))
STEPS = int(os.environ.get("HELPLINE_FUZZ_STEPS", "25"))
#: Codes a relay may close a connection with: the protocol's, and WebSocket's normal ones.
CODED = {int(code) for code in ErrorCode} | {1000, 1001, 1008, 1009, 1011}
T = TypeVar("T")


@dataclass
class Rig:
    relay: RelayProcess
    real: AgentProcess
    forged_dir: Path
    token: str
    loop: asyncio.AbstractEventLoop
    web_cookie: str = ""
    inputs: int = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 30))


RIG: Rig | None = None


def rig() -> Rig:
    assert RIG is not None, "the fuzz rig is set up by the module's fixture"
    return RIG


@pytest.fixture(scope="module")
def fuzz_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    global RIG
    directory = tmp_path_factory.mktemp("fuzz")
    relay = init_relay(directory)
    relay.start()
    real = enroll_agent(relay, directory, "real", consent={"shell": "allow", "files": "allow"})
    real.start()
    forged = enroll_agent(relay, directory, "forged")  # its certificate only; never run
    loop = asyncio.new_event_loop()
    try:
        RIG = Rig(relay, real, forged.config_dir, admin_token(relay), loop)
        _wait_online(RIG, "real")
        yield RIG
        assert relay.process is not None and relay.process.poll() is None, "the relay died"
        _assert_clean_log(relay)
    finally:
        RIG = None
        loop.close()
        real.stop()
        relay.stop()


def _wait_online(rig: Rig, name: str) -> None:
    for _ in range(400):
        status, body = rest(rig.relay, "GET", "/api/v1/devices", token=rig.token)
        assert status == 200, body
        if any(d["name"] == name and d["online"] for d in body["devices"]):
            return
        rig.loop.run_until_complete(asyncio.sleep(0.05))
    raise AssertionError(f"{name} never came online")


def _assert_clean_log(relay: RelayProcess) -> None:
    log = relay.log()
    for sign in ("Traceback", "Error handling request", "Unhandled exception", "Task exception"):
        assert sign not in log, log[log.index(sign) - 2000 : log.index(sign) + 2000]


def _real_shell_still_works(rig: Rig) -> None:
    async def echo() -> bytes:
        async with (
            HelplineClient(rig.relay.url, rig.relay.ca_pem, token=rig.token) as client,
            client.connect() as console,
        ):
            channel = await console.open_session(
                "real",
                "shell",
                reason="fuzz check",
                params={"command": "echo still-here", "pty": "0"},
            )
            return await read_to_end(channel)

    assert b"still-here" in rig.run(echo())


# -- what goes on the wire --------------------------------------------------------------

KINDS = ["shell", "files", "screen", "update", "view", "control", "", "x" * 40]
WORDS = [
    "shell",
    "files",
    "screen",
    "control",
    "view",
    "pty",
    "1",
    "0",
    "allow",
    "deny",
    "prompt",
    "exec",
    "list",
    "stat",
    "get",
    "put",
    "mkdir",
    "remove",
    "rename",
    "/",
    "/etc/passwd",
    "../../..",
    "\r\nINFO forged",
    "\x00",
    "admin",
    "relay",
    "é",
    "",
]
texts = st.one_of(st.sampled_from(WORDS), st.text(max_size=24))
integers = st.one_of(
    st.integers(-2, 70_000), st.sampled_from([2**31, 2**32 - 1, 2**53, 2**63, -(2**63)])
)
anything: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | integers | texts | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def _field_values(annotation: str) -> st.SearchStrategy[Any]:
    if annotation == "int":
        return integers
    if annotation == "bool":
        return st.booleans()
    if annotation == "str":
        return texts
    if annotation.startswith("Mapping"):
        return st.dictionaries(texts, texts, max_size=4)
    if annotation == "tuple[str, ...]":
        return st.lists(texts, max_size=4)
    return st.lists(st.dictionaries(texts, anything, max_size=5), max_size=3)


def _message_bodies(cls: type[Message]) -> st.SearchStrategy[dict[str, Any]]:
    """Wire maps of one message type: its fields with values of their type, some missing,
    some of another type, some extra."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    values = {
        name: st.one_of(_field_values(str(kind)), anything) if fields else anything
        for name, kind in fields.items()
    }
    return st.fixed_dictionaries({"t": st.just(cls.TYPE)}, optional=values)


messages = st.sampled_from(sorted(message_types().values(), key=lambda c: c.TYPE)).flatmap(
    _message_bodies
)


def control_frame(channel: int, body: dict[str, Any]) -> bytes:
    return encode_frame(FrameKind.CONTROL, channel, msgpack.packb(body, use_bin_type=True))


def _close_code(message: aiohttp.WSMessage, ws: aiohttp.ClientWebSocketResponse) -> int:
    """The code the relay closed with: the one in its close frame when there was one (the
    client's own ``close_code`` turns into 1006 when its reply finds the socket gone)."""
    if message.type is aiohttp.WSMsgType.CLOSE and isinstance(message.data, int):
        return message.data
    return ws.close_code or -1


class Side:
    """One raw connection of the machine, closed by the relay or not."""

    def __init__(self, link: RawLink, name: str) -> None:
        self.link = link
        self.name = name
        self.closed_with: int | None = None
        self.parser = FrameParser(16 * 1024 * 1024)
        self.opened: list[int] = []  # channels the relay opened toward this side

    @property
    def open(self) -> bool:
        return self.closed_with is None and not self.link.ws.closed

    async def send(self, frame: bytes) -> None:
        if self.open:
            try:
                await self.link.ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                await self.drain()
        rig().inputs += 1

    async def drain(self) -> None:
        """Read what the relay sent until it is quiet for a moment; note a close."""
        while self.closed_with is None:
            try:
                message = await self.link.ws.receive(timeout=0.02)
            except TimeoutError:
                return
            if message.type is aiohttp.WSMsgType.BINARY:
                for frame in self.parser.feed(message.data):
                    if frame.kind is FrameKind.CONTROL:
                        body = msgpack.unpackb(frame.body, raw=False)
                        if body.get("t") == "open" and frame.channel not in self.opened:
                            self.opened.append(frame.channel)
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                self.closed_with = _close_code(message, self.link.ws)
            elif message.type is aiohttp.WSMsgType.ERROR:
                self.closed_with = -1


class ProtocolMachine(RuleBasedStateMachine):
    """A technician's console and a forged device's agent connection, fuzzed together."""

    channels = Bundle("channels")

    def __init__(self) -> None:
        super().__init__()
        self.stack = AsyncExitStack()
        self.request_ids = 0

    @initialize()
    def connect(self) -> None:
        async def both() -> tuple[Side, Side]:
            agent = await self.stack.enter_async_context(
                raw_agent_link(rig().relay, rig().forged_dir)
            )
            console = await self.stack.enter_async_context(
                raw_console_link(rig().relay, rig().token)
            )
            for link in (agent, console):
                await link.send_hello()
                await link.next_message()
            return Side(agent, "agent"), Side(console, "console")

        self.agent, self.console = rig().run(both())

    def side(self, agent: bool) -> Side:
        return self.agent if agent else self.console

    @rule(
        device=st.sampled_from(["forged", "real", "nobody", ""]),
        kind=st.sampled_from(KINDS),
        params=st.dictionaries(texts, texts, max_size=4),
        reason=texts,
    )
    def request_session(self, device: str, kind: str, params: dict[str, str], reason: str) -> None:
        self.request_ids += 1
        request = SessionRequest(self.request_ids, device, kind, reason, params)
        rig().run(self.console.send(control_frame(0, request.to_wire())))

    @rule(target=channels, agent=st.booleans())
    def learn_channel(self, agent: bool) -> int:
        rig().run(self.side(agent).drain())
        opened = self.side(agent).opened
        return opened[-1] if opened else 1

    @rule(
        agent=st.booleans(), channel=st.one_of(channels, st.integers(0, 2**32 - 1)), body=messages
    )
    def send_message(self, agent: bool, channel: int, body: dict[str, Any]) -> None:
        rig().run(self.side(agent).send(control_frame(channel, body)))

    @rule(
        agent=st.booleans(),
        channel=channels,
        answer=st.sampled_from(["accept", "consent", "reject", "close"]),
    )
    def answer_open(self, agent: bool, channel: int, answer: str) -> None:
        body: dict[str, Any] = {
            "accept": {"t": "accept", "window": 65536},
            "consent": {"t": "consent", "granted": True, "how": "prompt", "by": "admin"},
            "reject": {"t": "reject", "code": 4450, "message": "no"},
            "close": {"t": "close", "code": 1000},
        }[answer]
        rig().run(self.side(agent).send(control_frame(channel, body)))

    @rule(
        agent=st.booleans(),
        channel=st.one_of(channels, st.integers(0, 2**32 - 1)),
        data=st.binary(max_size=2048),
    )
    def send_data(self, agent: bool, channel: int, data: bytes) -> None:
        rig().run(self.side(agent).send(encode_frame(FrameKind.DATA, channel, data)))

    @rule(agent=st.booleans(), data=st.binary(min_size=1, max_size=64))
    def send_garbage(self, agent: bool, data: bytes) -> None:
        rig().run(self.side(agent).send(data))

    @precondition(lambda self: hasattr(self, "agent"))
    @invariant()
    def closes_are_coded(self) -> None:
        for side in (self.agent, self.console):
            rig().run(side.drain())
            assert side.closed_with is None or side.closed_with in CODED, (
                f"the relay closed the {side.name} connection with {side.closed_with}"
            )

    def teardown(self) -> None:
        rig().run(self.stack.aclose())
        status, _ = rest(rig().relay, "GET", "/api/v1/health")
        assert status == 200


@pytest.mark.timeout(900)
def test_fuzz_console_and_forged_agent(fuzz_rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    before = fuzz_rig.inputs
    run_machine(ProtocolMachine)
    sent = fuzz_rig.inputs - before
    _real_shell_still_works(fuzz_rig)
    with capsys.disabled():
        print(f"\nfuzz: {sent} inputs in {EXAMPLES} sequences on the console and agent endpoints")
    assert sent >= EXAMPLES


# -- the web console's sockets ------------------------------------------------------------

SOCKETS = [
    "/web/ws/shell?device=real",
    "/web/ws/screen?device=real&kind=view",
    "/web/ws/files?device=real",
    "/web/ws/events",
    "/web/ws/shell?device=nobody",
]
PAGE_TYPES = [
    "ack",
    "end",
    "resize",
    "screen.select",
    "screen.mode",
    "screen.refresh",
    "screen.control",
    "input.key",
    "input.text",
    "input.pointer",
    "list",
    "x",
]
page_messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(PAGE_TYPES)},
        optional={
            "bytes": integers,
            "cols": integers,
            "rows": integers,
            "seq": integers,
            "monitor": integers,
            "mode": texts,
            "text": texts,
            "x": integers,
            "y": integers,
            "action": texts,
            "key": texts,
            "code": texts,
            "id": integers,
            "reason": texts,
            "op": st.sampled_from(["list", "mkdir", "remove", "rename", "stat", "x"]),
            "path": texts,
            "target": texts,
        },
    ).map(json.dumps),
    anything.map(lambda value: json.dumps(value, default=repr)),
    st.text(max_size=40),
)


class WebSocketMachine(RuleBasedStateMachine):
    """The browser's sockets, opened as a signed-in page would, then fuzzed."""

    def __init__(self) -> None:
        super().__init__()
        self.stack = AsyncExitStack()
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.codes: list[int | None] = []
        self.history: list[list[Any]] = []  # per socket: its path, then what was sent

    @rule(path=st.sampled_from(SOCKETS))
    def open_socket(self, path: str) -> None:
        if len(self.sockets) >= 3:
            return

        async def connect() -> None:
            session = await self.stack.enter_async_context(aiohttp.ClientSession())
            relay = rig().relay
            ws = await self.stack.enter_async_context(
                session.ws_connect(
                    relay.url + path,
                    ssl=pinned_client_context(relay.ca_pem),
                    headers={"Cookie": rig().web_cookie, "Origin": relay.url},
                    heartbeat=None,
                )
            )
            self.sockets.append(ws)
            self.codes.append(None)
            self.history.append([path])

        rig().run(connect())
        rig().inputs += 1

    @precondition(lambda self: self.sockets)
    @rule(which=st.integers(0, 2), text=page_messages)
    def send_text(self, which: int, text: str) -> None:
        self._send(which, text)

    @precondition(lambda self: self.sockets)
    @rule(which=st.integers(0, 2), data=st.binary(max_size=512))
    def send_binary(self, which: int, data: bytes) -> None:
        self._send(which, data)

    def _send(self, which: int, payload: str | bytes) -> None:
        index = which % len(self.sockets)
        ws = self.sockets[index]
        self.history[index].append(payload)

        async def send() -> None:
            if ws.closed:
                return
            try:
                if isinstance(payload, str):
                    await ws.send_str(payload)
                else:
                    await ws.send_bytes(payload)
            except (ConnectionError, RuntimeError):
                return

        rig().run(send())
        rig().inputs += 1

    @invariant()
    def closes_are_coded(self) -> None:
        async def drain() -> None:
            for index, ws in enumerate(self.sockets):
                while self.codes[index] is None:
                    try:
                        message = await ws.receive(timeout=0.02)
                    except TimeoutError:
                        break
                    if message.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        self.codes[index] = _close_code(message, ws)
                        if self.codes[index] not in CODED:
                            self.history[index].append((message, ws.exception()))

        rig().run(drain())
        for code, history in zip(self.codes, self.history, strict=True):
            assert code is None or code in CODED, f"a web socket closed with {code}: {history}"

    def teardown(self) -> None:
        rig().run(self.stack.aclose())


@pytest.mark.timeout(900)
def test_fuzz_web_sockets(fuzz_rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    status, body = rest(fuzz_rig.relay, "GET", "/api/v1/health")
    assert status == 200, body
    fuzz_rig.web_cookie = fuzz_rig.run(_web_sign_in(fuzz_rig.relay))
    before = fuzz_rig.inputs
    run_machine(WebSocketMachine)
    sent = fuzz_rig.inputs - before
    _real_shell_still_works(fuzz_rig)
    with capsys.disabled():
        print(f"\nfuzz: {sent} inputs in {EXAMPLES} sequences on the web console's sockets")
    assert sent >= EXAMPLES


async def _web_sign_in(relay: RelayProcess) -> str:
    """Sign the first admin in as the web page does; the session cookie's header value."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            relay.url + "/web/login",
            json={
                "username": relay.admin["username"],
                "password": relay.admin["password"],
                "otp": totp_now(relay.admin["totp_secret"], step_offset=1),
            },
            headers={"Origin": relay.url},
            ssl=pinned_client_context(relay.ca_pem),
        ) as response,
    ):
        assert response.status == 200, await response.text()
        cookie = response.cookies["__Host-helpline"]
        return f"__Host-helpline={cookie.value}"


def run_machine(machine: type[RuleBasedStateMachine]) -> None:
    test_case = machine.TestCase
    test_case.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=os.environ.get("HELPLINE_FUZZ_SEED") is None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    test_case("runTest").runTest()
