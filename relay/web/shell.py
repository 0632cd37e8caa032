"""A shell session in the browser: ``GET /web/ws/shell?device=...&reason=...&cols=&rows=``.

The relay is the technician's leg of a broker session (like the SSH gateway),
so authorisation, consent, recording and audit are those of every session.

The WebSocket carries, from the relay: JSON text ``{"type": "waiting" |
"opened" | "refused" | "exit" | "eof" | "closed", ...}`` and the terminal's
output as binary messages; from the browser: keystrokes as binary messages and
JSON ``{"type": "resize", "cols", "rows"}``, ``{"type": "ack", "bytes"}`` and
``{"type": "end"}``.

Flow control, both ways bounded: output goes out while fewer than ``WINDOW``
bytes are not yet acknowledged by the page (it acknowledges once xterm.js has
drawn them); input is read from the socket only while fewer than ``READ_HIGH``
bytes given to the broker are not yet passed on to the agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web

from protocol.errors import InvalidMessage, NotPermitted

from ..api.common import user_of
from ..broker import Broker
from ..state import RELAY
from .legs import WebLeg, page_control
from .outbound import Outbound

log = logging.getLogger("helpline.web")

routes = web.RouteTableDef()

#: Output bytes sent to the page and not yet acknowledged, at most.
WINDOW = 256 * 1024
#: Input bytes given to the broker, not yet passed on, before the relay stops reading.
READ_HIGH = 256 * 1024
READ_LOW = 64 * 1024
#: The longest reason a request carries, and the largest message the page may send.
MAX_REASON = 1024
MAX_MESSAGE = 64 * 1024
TERM = "xterm-256color"


def dimension(value: Any, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(1, min(1000, number))


class WebShellLeg(WebLeg):
    """A shell session's technician side on a browser's WebSocket: input from the page
    pauses while too much of it waits to reach the device."""

    def __init__(self, out: Outbound, broker: Broker) -> None:
        super().__init__(out, broker, WINDOW)
        self.outstanding = 0
        self.input_room = asyncio.Event()
        self.input_room.set()

    async def consumed(self, size: int) -> None:
        self.outstanding = max(0, self.outstanding - size)
        if self.outstanding <= READ_LOW:
            self.input_room.set()

    async def close(self, code: int, message: str) -> None:
        self.input_room.set()  # nothing waits for input room in a session that is over
        await super().close(code, message)


@routes.get("/web/ws/shell")
async def shell_socket(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    broker = relay.broker
    user = user_of(request)
    query = request.query
    device = query.get("device", "")[:256]
    reason = query.get("reason", "")
    if len(reason) > MAX_REASON:
        raise InvalidMessage(f"the reason is limited to {MAX_REASON} characters")
    cols, rows = dimension(query.get("cols"), 80), dimension(query.get("rows"), 24)
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30.0, compress=False)
    await ws.prepare(request)
    out = Outbound(ws, request)
    leg = WebShellLeg(out, broker)
    params = {"pty": "1", "term": TERM, "cols": str(cols), "rows": str(rows)}
    session = await broker.request(user, device, "shell", reason, params, leg)
    if session is None:
        await out.close(1000, "refused")
        return ws

    async def read_page() -> None:
        async for message in ws:
            if session.ended:
                return
            if message.type == WSMsgType.BINARY:
                leg.outstanding += len(message.data)
                await broker.tech_data(session, message.data)
                if leg.outstanding >= READ_HIGH:
                    leg.input_room.clear()
                    await leg.input_room.wait()
            elif message.type == WSMsgType.TEXT:
                control = page_control(message.data)
                kind = control["type"]
                if kind == "resize":
                    cols = dimension(control.get("cols"), 80)
                    rows = dimension(control.get("rows"), 24)
                    await broker.tech_resize(session, cols, rows)
                elif kind == "ack":
                    await leg.acknowledged(control)
                elif kind == "end":
                    await broker.tech_closed(session)
                    return
                else:
                    raise InvalidMessage(f"unknown control message {kind[:32]!r}")

    await leg.serve(session, read_page, (InvalidMessage, NotPermitted))
    return ws
