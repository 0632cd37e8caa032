"""Live device state for the web console: ``GET /web/ws/events``.

The page lists devices over REST, then this socket tells it, as JSON text,
``{"type": "device", "id", "name", "online", "last_seen"}`` when a device it
may see comes online or goes offline, and ``{"type": "inventory", "id"}`` when
a device reported its inventory again (the page fetches it). Auditors see no
devices, so they get no events.
"""

from __future__ import annotations

from aiohttp import web

from ..api.common import user_of
from ..api.devices import visible_groups
from ..links import AgentLink
from ..models import UserRole
from ..state import RELAY
from .outbound import Outbound

routes = web.RouteTableDef()


@routes.get("/web/ws/events")
async def events_socket(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    user = user_of(request)
    groups = await visible_groups(relay, user)
    if user.role is UserRole.AUDITOR:
        groups = set()
    ws = web.WebSocketResponse(max_msg_size=4096, heartbeat=30.0, compress=False)
    await ws.prepare(request)
    out = Outbound(ws)

    def watch(what: str, link: AgentLink) -> None:
        if groups is not None and link.group not in groups:
            return
        if what == "inventory":
            out.json(type="inventory", id=link.device_id)
        else:
            out.json(
                type="device",
                id=link.device_id,
                name=link.name,
                online=what == "online",
                last_seen=link.last_seen,
            )

    relay.presence.watchers.add(watch)
    try:
        out.json(type="ready")
        async for _ in ws:
            pass  # the page says nothing; pings are answered by aiohttp
    finally:
        relay.presence.watchers.discard(watch)
        await out.stop()
    return ws
