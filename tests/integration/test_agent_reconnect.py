"""The relay goes away and comes back (same port, same data directory): the agent rides it
out, retrying with capped, jittered backoff, never crashes, and is online again by itself."""

from __future__ import annotations

import re
from collections.abc import Callable

from console.client import HelplineClient

from .conftest import AgentProcess, RelayProcess, async_wait_for, wait_for
from .helpers import agent_log_count, audit_entries, backoff_ceilings

StartAgent = Callable[..., AgentProcess]


async def test_agent_reconnects_after_the_relay_restarts(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    agent = start_agent("desk")

    async def desk_online() -> bool:
        return any(d["name"] == "desk" and d["online"] for d in await admin_client.devices())

    await async_wait_for(desk_online, what="desk online")
    assert agent_log_count(agent.log(), "connected to relay as desk") == 1

    relay.stop()
    # The relay said goodbye on its way out; the agent keeps trying while it is gone.
    wait_for(lambda: "relay said goodbye: relay shutting down (1001)" in agent.log())

    def failed_attempts() -> int:
        return agent_log_count(agent.log(), "connection to relay failed")

    wait_for(lambda: failed_attempts() >= 4, what="four failed attempts while the relay is down")
    assert agent.process is not None
    assert agent.process.poll() is None, agent.log()

    relay.start()
    await async_wait_for(desk_online, seconds=30, what="desk online again after the restart")

    log = agent.log()
    assert agent_log_count(log, "connected to relay as desk") == 2
    assert "Traceback" not in log
    outage = log.split("relay shutting down (1001)", 1)[1].split("connected to relay as desk")[0]
    delays = [float(d) for d in re.findall(r"reconnecting in ([0-9.]+) s", outage)]
    # Capped exponential backoff with full jitter: each wait at most twice the one before.
    assert len(delays) >= 4
    ceilings = backoff_ceilings(agent.config_dir, len(delays))
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True)), (delays, ceilings)
    assert agent.process.poll() is None

    # The restarted relay kept everything: the device, the session token, the audit chain.
    device = await admin_client.device("desk")
    assert device["id"] == agent.device_id
    assert device["inventory"]["agent_version"]
    assert len(await audit_entries(admin_client, action="relay.start")) == 2
    assert (await admin_client.verify_audit()).ok
