"""The consoles' endpoint: ``GET /api/v1/console`` upgraded to a WebSocket (bearer token).

After the Hello exchange the relay sends the status of every device the user
may see, then a ``DeviceStatus`` each time one comes online or goes offline.
Sessions ride on the same connection: a ``SessionRequest`` goes to the
:class:`~relay.broker.Broker`, and a granted session arrives as a channel.
"""

from __future__ import annotations

import logging

from aiohttp import web

from protocol import (
    ChannelAccepted,
    ChannelClosed,
    ChannelData,
    ChannelRejected,
    Connection,
    CreditAvailable,
    DeviceStatus,
    Event,
    Hello,
    Message,
    Role,
)
from protocol.errors import HandshakeError
from protocol.events import ChannelMessage
from protocol.frames import websocket_message_limit
from protocol.sessions import ChannelEof, ExitStatus, SessionRequest, SessionStatus, TerminalResize

from .agents import protocol_limits
from .api.common import user_of
from .api.devices import visible_groups
from .broker import Session
from .legs import TechnicianLeg
from .links import ConsoleLink, run_link
from .models import UserRole
from .state import RELAY, VERSION

log = logging.getLogger("helpline.consoles")

routes = web.RouteTableDef()

#: A console says nothing for this long (no heartbeat) and is dropped.
CONSOLE_IDLE_TIMEOUT = 120.0


class ConsoleLeg(TechnicianLeg):
    """A session's technician side on a console WebSocket."""

    via = "console"

    def __init__(self, link: ConsoleLink, request: int) -> None:
        self.link = link
        self.request = request
        self.channel: int | None = None

    def credit(self) -> int:
        if self.channel is None or not self.link.conn.has_channel(self.channel):
            return 0
        try:
            return self.link.conn.send_credit(self.channel)
        except Exception:  # offered but not yet accepted, or closing
            return 0

    async def _status(self, state: str, session: str, code: int = 0, message: str = "") -> None:
        if self.link.ws.closed:
            return
        status = SessionStatus(
            request=self.request, state=state, session=session, code=code, message=message[:1024]
        )
        self.link.conn.send(status)
        await self.link.flush()

    async def waiting(self, session: Session) -> None:
        await self._status(
            "waiting", session.id, message=f"waiting for consent on {session.device.name}"
        )

    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        await self._status(state, session.id if session else "", code, message)

    async def opened(self, session: Session) -> None:
        self.channel = session.channel
        params = {
            "request": str(self.request),
            "session": session.id,
            "device": session.device.name,
        }
        self.link.conn.open_channel(session.channel, session.kind, params)
        await self.link.flush()

    async def send(self, data: bytes) -> None:
        assert self.channel is not None
        self.link.conn.send_data(self.channel, data)
        self.link.flush_soon()

    async def consumed(self, size: int) -> None:
        if self.channel is not None:
            self.link.conn.acknowledge(self.channel, size)
            self.link.flush_soon()

    async def exit_status(self, code: int, signal: str) -> None:
        assert self.channel is not None
        self.link.conn.send_channel_message(self.channel, ExitStatus(code=code, signal=signal))
        await self.link.flush()

    async def eof(self) -> None:
        assert self.channel is not None
        self.link.conn.send_channel_message(self.channel, ChannelEof())
        await self.link.flush()

    async def message(self, message: Message) -> None:
        assert self.channel is not None
        self.link.conn.send_channel_message(self.channel, message)
        await self.link.flush()

    async def close(self, code: int, message: str) -> None:
        if self.channel is not None:
            self.link.conn.close_channel(self.channel, code, message[:1024])
            await self.link.flush()


@routes.get("/api/v1/console")
async def console_connect(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    broker = relay.broker
    user = user_of(request)
    groups = await visible_groups(relay, user)
    if user.role is UserRole.AUDITOR:
        groups = set()
    limits = protocol_limits(relay)
    ws = web.WebSocketResponse(
        max_msg_size=websocket_message_limit(limits.max_frame_size), compress=False, autoping=True
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
            return
        if isinstance(event, SessionRequest):
            await broker.request(
                user,
                event.device,
                event.kind,
                event.reason,
                event.params,
                ConsoleLeg(link, event.request),
            )
            return
        channel = getattr(event, "channel", None)
        session = broker.by_channel(channel) if channel is not None else None
        if (
            session is None
            or not isinstance(session.tech, ConsoleLeg)
            or session.tech.link is not link
        ):
            return
        if isinstance(event, ChannelAccepted):
            await broker.tech_accepted(session)
        elif isinstance(event, CreditAvailable):
            await broker.tech_credit(session)
        elif isinstance(event, ChannelData):
            await broker.tech_data(session, event.data)
        elif isinstance(event, ChannelMessage):
            if isinstance(event.message, TerminalResize):
                await broker.tech_resize(session, event.message.cols, event.message.rows)
            elif isinstance(event.message, ChannelEof):
                await broker.tech_eof(session)
            else:
                await broker.tech_message(session, event.message)
        elif isinstance(event, ChannelClosed | ChannelRejected):
            await broker.tech_closed(session)

    try:
        await run_link(link, on_event, relay.presence.watchdog, CONSOLE_IDLE_TIMEOUT)
    finally:
        relay.presence.consoles.discard(link)
        await broker.technician_lost(lambda leg: isinstance(leg, ConsoleLeg) and leg.link is link)
    return ws
