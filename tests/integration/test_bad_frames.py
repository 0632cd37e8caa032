"""Malformed, oversized and unknown input on the relay's two WebSocket endpoints, sent over
real mTLS (an enrolled agent's own certificate) and bearer-token connections.

Each bad connection gets a Goodbye with the error's code and is then closed with that same
code as the WebSocket close code. Meanwhile a real agent process, and a second agent
connection that keeps sending heartbeats, stay online and acknowledged, and REST keeps
answering: one peer's garbage never reaches another.
"""

from __future__ import annotations

import struct
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from protocol import Heartbeat, HeartbeatAck, Hello, Inventory
from protocol.errors import ErrorCode
from protocol.frames import FrameKind, encode_frame

from .conftest import AgentProcess, RelayProcess, async_wait_for, enroll_agent, init_relay
from .helpers import RawLink, admin_token, agent_log_count, api, raw_agent_link, raw_console_link


@dataclass
class Stage:
    relay: RelayProcess
    bystander: AgentProcess
    victim_dir: Path
    witness_dir: Path
    token: str
    max_frame_size: int


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """One relay for the module; every test leaves it as it found it (or fails)."""
    directory = tmp_path_factory.mktemp("bad-frames")
    relay = init_relay(directory)
    relay.start()
    bystander = enroll_agent(relay, directory, "bystander")
    bystander.start()
    try:
        victim = enroll_agent(relay, directory, "victim")
        witness = enroll_agent(relay, directory, "witness")
        limits = tomllib.loads((relay.data_dir / "relay.toml").read_text())["agents"]
        yield Stage(
            relay,
            bystander,
            victim.config_dir,
            witness.config_dir,
            admin_token(relay),
            limits["max_frame_size"],
        )
    finally:
        bystander.stop()
        relay.stop()


# -- what each case sends -------------------------------------------------------------

Send = Callable[[RawLink, Stage], Awaitable[None]]


async def garbage(link: RawLink, stage: Stage) -> None:
    await link.ws.send_bytes(b"\xde\xad\xbe\xef" * 8)


async def oversized_header(link: RawLink, stage: Stage) -> None:
    # Only the 9-byte header: it alone must be refused, before any body is awaited.
    await link.ws.send_bytes(struct.pack(">BII", FrameKind.CONTROL, 0, stage.max_frame_size + 1))


async def unknown_type(link: RawLink, stage: Stage) -> None:
    await hello(link)
    body = {"t": "teleport", "where": "mars"}
    await link.ws.send_bytes(encode_frame(FrameKind.CONTROL, 0, msgpack.packb(body)))


async def text_message(link: RawLink, stage: Stage) -> None:
    await link.ws.send_str('{"t": "hello"}')


async def huge_hostname(link: RawLink, stage: Stage) -> None:
    await hello(link)
    inventory = Inventory(hostname="h" * 10_000, os="Linux", user="eve", agent_version="0.1.0")
    await link.ws.send_bytes(encode_frame(FrameKind.CONTROL, 0, inventory.encode()))


async def hello(link: RawLink) -> None:
    await link.send_hello()
    assert isinstance(await link.next_message(), Hello)


CASES: dict[str, tuple[Send, ErrorCode, str]] = {
    "garbage": (garbage, ErrorCode.MALFORMED_FRAME, "frame kind"),
    "oversized-header": (oversized_header, ErrorCode.FRAME_TOO_LARGE, "exceeds"),
    "unknown-type": (unknown_type, ErrorCode.UNKNOWN_MESSAGE, "teleport"),
    "text-message": (text_message, ErrorCode.MALFORMED_FRAME, "text"),
    "huge-hostname": (huge_hostname, ErrorCode.LIMIT_EXCEEDED, "hostname"),
}


def open_link(endpoint: str, stage: Stage) -> AbstractAsyncContextManager[RawLink]:
    if endpoint == "agent":
        return raw_agent_link(stage.relay, stage.victim_dir)
    return raw_console_link(stage.relay, stage.token)


async def online(stage: Stage) -> dict[str, bool]:
    status, body = await api(stage.relay, "GET", "/api/v1/devices", token=stage.token)
    assert status == 200, body
    return {d["name"]: d["online"] for d in body["devices"]}


@asynccontextmanager
async def witness_link(stage: Stage) -> AsyncIterator[RawLink]:
    async with raw_agent_link(stage.relay, stage.witness_dir) as link:
        await hello(link)
        yield link


async def heartbeat_acknowledged(link: RawLink, seq: int) -> None:
    await link.send_message(Heartbeat(seq=seq))
    while True:
        message = await link.next_message()
        if isinstance(message, HeartbeatAck):
            assert message.seq == seq
            return


@pytest.mark.parametrize("endpoint", ["agent", "console"])
@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_closes_only_that_connection_with_its_code(
    stage: Stage, endpoint: str, case: str
) -> None:
    send, code, words = CASES[case]

    async def bystanders_online() -> bool:
        devices = await online(stage)
        return devices.get("bystander", False) and devices.get("witness", False)

    async with witness_link(stage) as witness:
        await async_wait_for(bystanders_online, what="bystander and witness online")
        await heartbeat_acknowledged(witness, 1)

        async with open_link(endpoint, stage) as bad:
            await send(bad, stage)
            closed = await bad.wait_closed()

        assert closed.close_code == code, (case, closed)
        assert [g.code for g in closed.goodbyes] == [code], (case, closed)
        assert words in closed.goodbyes[0].message, closed.goodbyes[0]

        # The other agent connection is still there and still answered...
        await heartbeat_acknowledged(witness, 2)
        await heartbeat_acknowledged(witness, 3)
        # ...the real agent process never lost its connection, and REST still serves.
        devices = await online(stage)
        assert devices["bystander"] and devices["witness"]
        assert agent_log_count(stage.bystander.log(), "connected to relay as bystander") == 1
        status, health = await api(stage.relay, "GET", "/api/v1/health")
        assert (status, health["status"]) == (200, "ok")

        # A connection that got as far as Hello is not left behind as "online".
        async def victim_offline() -> bool:
            return not (await online(stage)).get("victim", False)

        await async_wait_for(victim_offline, what="the bad connection's device to be offline")
