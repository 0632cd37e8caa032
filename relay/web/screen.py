"""A screen session in the browser: ``GET /web/ws/screen?device=&kind=view|control&reason=``
(optionally ``&mode=lossless|auto|lossy&monitor=N``).

The relay is the technician's leg of a broker session (as for the web shell),
so authorisation, consent, the screen guard (input only under ``control``
consent, refusals audited), the check of the agent's tile stream and the
recording are those of every screen session (:mod:`relay.screens`).

The WebSocket carries, from the relay: the tile stream
(:mod:`protocol.screen`) as binary messages, split anywhere; JSON text
``{"type": "waiting" | "opened" | "refused" | "closed" | "error", ...}`` about
the session, and the device's screen messages as JSON with their wire type
(``{"type": "screen.info", "monitors": [...], "monitor", "mode", "control"}``,
``{"type": "screen.refused", "code", "message"}``).

From the browser: ``{"type": "ack", "bytes": N}`` once N stream bytes are
drawn (the relay's window toward the page), ``{"type": "end"}``, and the
screen messages a viewer may send, as JSON with their wire type and fields
(``screen.ack``, ``screen.select``, ``screen.mode``, ``screen.refresh``,
``screen.control``, ``input.pointer``, ``input.key``, ``input.text``), each
validated here exactly as on the wire before the broker sees it. Anything
else ends the session with a clear error. The page may send at most
:data:`MAX_RATE` requests and input events a second (it coalesces pointer
moves per animation frame) and :data:`MAX_ACK_RATE` acknowledgements, so
nothing it sends queues up without bound toward the agent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from protocol import Message
from protocol.errors import InvalidMessage, LimitExceeded, NotPermitted, ProtocolError
from protocol.limits import Limits
from protocol.screen import (
    ControlRequest,
    EncodingMode,
    KeyInput,
    PointerInput,
    ScreenAck,
    ScreenMode,
    ScreenRefresh,
    ScreenSelect,
    TextInput,
)

from ..api.common import user_of
from ..broker import Broker, Session
from ..state import RELAY
from .legs import WebLeg, page_control
from .outbound import Outbound
from .shell import MAX_REASON

log = logging.getLogger("helpline.web")

routes = web.RouteTableDef()

#: Tile-stream bytes sent to the page and not yet drawn there, at most.
WINDOW = 4 * 1024 * 1024
#: The largest message the page may send (a TextInput of 1024 characters fits).
MAX_MESSAGE = 16 * 1024
#: Requests and input a second the page may send, on average, and in one burst.
MAX_RATE = 250.0
BURST = 500.0
#: Acknowledgements (of bytes and of frames) a second, which follow what the relay sends.
MAX_ACK_RATE = 2000.0
ACKS = frozenset({"ack", ScreenAck.TYPE})
KINDS = frozenset({"view", "control"})
#: What a page may ask of the agent, by wire type.
VIEWER_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        ScreenAck,
        ScreenSelect,
        ScreenMode,
        ScreenRefresh,
        ControlRequest,
        PointerInput,
        KeyInput,
        TextInput,
    )
}
_LIMITS = Limits()


class RateLimit:
    """A token bucket: ``MAX_RATE`` a second, ``BURST`` at once."""

    def __init__(
        self, rate: float = MAX_RATE, burst: float = BURST, what: str = "requests"
    ) -> None:
        self.rate, self.burst, self.what = rate, burst, what
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            raise LimitExceeded(f"more than {self.rate:g} {self.what} a second from the page")
        self.tokens -= 1


def viewer_message(control: dict[str, Any]) -> Message:
    """The screen message a page sent as JSON, validated as on the wire."""
    kind = control["type"]
    cls = VIEWER_MESSAGES.get(kind)
    if cls is None:
        raise InvalidMessage(f"unknown control message {kind[:32]!r}")
    fields = {name: value for name, value in control.items() if name != "type"}
    return cls.from_wire(fields, _LIMITS)


def wire_json(message: Message) -> dict[str, Any]:
    """A device's screen message for the page: its wire fields, ``type`` for ``t``."""
    body = message.to_wire()
    return {"type": body.pop("t"), **body}


class WebScreenLeg(WebLeg):
    """A screen session's technician side on a browser's WebSocket."""

    def __init__(self, out: Outbound, broker: Broker) -> None:
        super().__init__(out, broker, WINDOW)

    async def consumed(self, size: int) -> None:
        """Screen sessions carry no bytes toward the device."""

    async def message(self, message: Message) -> None:
        self.out.json(**wire_json(message))


async def _from_page(
    broker: Broker, session: Session, leg: WebScreenLeg, data: str, rates: dict[bool, RateLimit]
) -> bool:
    """Act on one text message from the page; False when the page ended the session."""
    control = page_control(data)
    kind = control["type"]
    rates[kind in ACKS].take()
    if kind == "ack":
        await leg.acknowledged(control)
    elif kind == "end":
        await broker.tech_closed(session)
        return False
    else:
        await broker.tech_message(session, viewer_message(control))
    return True


@routes.get("/web/ws/screen")
async def screen_socket(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    broker = relay.broker
    user = user_of(request)
    query = request.query
    device = query.get("device", "")[:256]
    kind = query.get("kind", "view")
    if kind not in KINDS:
        raise InvalidMessage("kind must be view or control")
    reason = query.get("reason", "")
    if len(reason) > MAX_REASON:
        raise InvalidMessage(f"the reason is limited to {MAX_REASON} characters")
    params: dict[str, str] = {}
    mode = query.get("mode", "")
    if mode:
        if mode not in set(EncodingMode):
            raise InvalidMessage("mode must be lossless, auto or lossy")
        params["mode"] = mode
    monitor = query.get("monitor", "")
    if monitor:
        if not monitor.isdigit() or int(monitor) > 15:
            raise InvalidMessage("monitor must be a number from 0 to 15")
        params["monitor"] = monitor
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30.0, compress=False)
    await ws.prepare(request)
    out = Outbound(ws, request)  # listed: sign-out and shutdown close it
    leg = WebScreenLeg(out, broker)
    session = await broker.request(user, device, kind, reason, params, leg)
    if session is None:
        await out.close(1000, "refused")
        return ws
    acks = RateLimit(MAX_ACK_RATE, 2 * MAX_ACK_RATE, "acknowledgements")
    rates = {False: RateLimit(), True: acks}

    async def read_page() -> None:
        async for message in ws:
            if session.ended:
                return
            if message.type == WSMsgType.TEXT:
                if not await _from_page(broker, session, leg, message.data, rates):
                    return
            elif message.type == WSMsgType.BINARY:
                raise InvalidMessage("a screen session takes no binary messages from the page")

    await leg.serve(session, read_page, (ProtocolError, NotPermitted))
    return ws
