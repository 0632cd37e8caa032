"""The console WebSocket: device status pushed live, scoped to what the user may see."""

from __future__ import annotations

from collections.abc import Callable

from console.client import ConsoleSession, HelplineClient
from protocol import DeviceStatus

from .conftest import AgentProcess, RelayProcess, totp_now


async def _next_status(session: ConsoleSession, device_id: str, online: bool) -> DeviceStatus:
    """The next status of ``device_id`` with ``online``; other events are skipped."""
    while True:
        event = await session.next_event(within=20)
        if (
            isinstance(event, DeviceStatus)
            and event.device_id == device_id
            and event.online is online
        ):
            return event


async def test_device_status_is_pushed_when_agents_come_and_go(
    relay: RelayProcess,
    admin_client: HelplineClient,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent("laptop-1")
    async with admin_client.connect(heartbeat_interval=1.0) as session:
        assert session.conn.peer is not None
        assert session.conn.peer.role == "relay"
        status = await _next_status(session, agent.device_id, True)
        assert status.name == "laptop-1"
        agent.stop()
        await _next_status(session, agent.device_id, False)
        agent.start()
        await _next_status(session, agent.device_id, True)


async def test_technician_sees_only_granted_groups(
    relay: RelayProcess,
    admin_client: HelplineClient,
    start_agent: Callable[..., AgentProcess],
) -> None:
    visible = start_agent("front-desk")
    hidden = start_agent("payroll")
    await admin_client.create_group("finance")
    await admin_client.update_device("payroll", group="finance")
    created = await admin_client.create_user("tess", role="technician")
    await admin_client.add_grant("tess", "default")
    async with HelplineClient(relay.url, relay.ca_pem) as tech:
        await tech.login("tess", created["password"], totp_now(created["totp_secret"]))
        names = {d["name"] for d in await tech.devices()}
        assert names == {"front-desk"}
        async with tech.connect(heartbeat_interval=1.0) as session:
            await _next_status(session, visible.device_id, True)
            hidden.stop()
            visible.stop()
            # Only the visible device's change arrives; the hidden one never shows up.
            while True:
                event = await session.next_event(within=20)
                assert not (isinstance(event, DeviceStatus) and event.device_id == hidden.device_id)
                if isinstance(event, DeviceStatus) and event.device_id == visible.device_id:
                    assert event.online is False
                    break
