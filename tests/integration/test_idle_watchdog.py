"""A peer that goes silent is closed by the relay's idle watchdog; one that talks is kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from console.client import HelplineClient
from protocol import ABNORMAL_CLOSURE, Heartbeat, Hello, Inventory
from protocol.errors import ErrorCode

from .conftest import AgentProcess, RelayProcess, async_wait_for, enroll_agent
from .helpers import raw_agent_link


async def _online(client: HelplineClient, name: str) -> bool:
    return any(d["name"] == name and d["online"] for d in await client.devices())


async def test_silent_agent_is_dropped_and_a_talking_one_is_kept(
    relay: RelayProcess,
    admin_client: HelplineClient,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    talking = start_agent("talker")  # a real agent: heartbeats every second
    silent = enroll_agent(relay, tmp_path, "mute")  # enrolled, never run: we speak for it
    async with raw_agent_link(relay, silent.config_dir) as link:
        await link.send_hello()
        assert isinstance(await link.next_message(), Hello)
        await link.send_message(
            Inventory(hostname="mute", os="Linux", user="u", agent_version="0", addresses=())
        )
        await async_wait_for(lambda: _online(admin_client, "mute"), what="the raw agent online")
        # Keep quiet past the relay's heartbeat_timeout (6 s in tests): the watchdog hangs up.
        closed = await link.wait_closed(within=30)
        # The protocol's Goodbye always says why; the WebSocket close that follows is
        # sometimes seen as abnormal (the relay closes while its reader is parked).
        assert [g.code for g in closed.goodbyes] == [ErrorCode.GOING_AWAY]
        assert closed.close_code in (ErrorCode.GOING_AWAY, ABNORMAL_CLOSURE)
        assert closed.goodbyes[0].message == "no heartbeat"
    assert not await _online(admin_client, "mute")
    assert await _online(admin_client, "talker")
    assert talking.process is not None
    assert talking.process.poll() is None
    assert "connected to relay" in talking.log()
    assert talking.log().count("connected to relay as talker") == 1  # never dropped


async def test_heartbeats_keep_a_quiet_link_open(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    quiet = enroll_agent(relay, tmp_path, "ticker")
    async with raw_agent_link(relay, quiet.config_dir) as link:
        await link.send_hello()
        assert isinstance(await link.next_message(), Hello)
        for seq in range(1, 10):  # nine seconds of one heartbeat a second, past the timeout
            await link.send_message(Heartbeat(seq=seq))
            await link.next_message()  # the HeartbeatAck
            await asyncio.sleep(1)
        assert not link.ws.closed
