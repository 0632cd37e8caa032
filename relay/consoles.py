"""The consoles' endpoint: ``GET /api/v1/console`` upgraded to a WebSocket (bearer token).

After the Hello exchange the relay sends the status of every device the user
may see, then a ``DeviceStatus`` each time one comes online or goes offline.
Sessions (shell, files...) ride on this same connection as channels.
"""

from __future__ import annotations

import logging

from aiohttp import web

from protocol import Connection, DeviceStatus, Event, Hello, Role
from protocol.errors import HandshakeError
from protocol.frames import HEADER_SIZE

from .agents import protocol_limits
from .api.common import user_of
from .api.devices import visible_groups
from .links import ConsoleLink, run_link
from .state import RELAY, VERSION

log = logging.getLogger("helpline.consoles")

routes = web.RouteTableDef()

#: A console says nothing for this long (no heartbeat) and is dropped.
CONSOLE_IDLE_TIMEOUT = 120.0


@routes.get("/api/v1/console")
async def console_connect(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    user = user_of(request)
    groups = await visible_groups(relay, user)
    if user.role.value == "auditor":
        groups = set()
    limits = protocol_limits(relay)
    ws = web.WebSocketResponse(
        max_msg_size=limits.max_frame_size + HEADER_SIZE, compress=False, autoping=True
    )
    await ws.prepare(request)
    conn = Connection(Role.RELAY, limits=limits, software=f"helpline-relay/{VERSION}")

    def may_see(group: str) -> bool:
        return groups is None or group in groups

    link = ConsoleLink(ws=ws, conn=conn, username=user.username, may_see=may_see)

    async def on_event(event: Event) -> None:
        if isinstance(event, Hello):
            if event.role != Role.CONSOLE:
                raise HandshakeError("this endpoint is for consoles")
            relay.presence.consoles.add(link)
            for device in await relay.store.list_devices():
                if may_see(device.group) and device.revoked_at is None:
                    online = relay.presence.is_online(device.id)
                    conn.send(DeviceStatus(device_id=device.id, name=device.name, online=online))

    try:
        await run_link(link, on_event, CONSOLE_IDLE_TIMEOUT)
    finally:
        relay.presence.consoles.discard(link)
    return ws
