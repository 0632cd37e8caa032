"""What the browser's session sockets share: :class:`WebLeg`, the technician's side of a
session on a page's WebSocket, and :func:`page_control`, reading a page's JSON message.

A leg only queues toward the page (:class:`~relay.web.outbound.Outbound` writes), and
lets the device send as far as the page acknowledged what it drew: at most ``window``
bytes are sent and not yet acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.errors import ErrorCode, HelplineError, InvalidMessage

from ..broker import Broker, Session
from ..legs import TechnicianLeg
from .outbound import Outbound

__all__ = ["WebLeg", "page_control"]


class WebLeg(TechnicianLeg):
    """A session's technician side on a browser's WebSocket."""

    via = "web"

    def __init__(self, out: Outbound, broker: Broker, window: int) -> None:
        self.out = out
        self.broker = broker
        self.window = window
        self.session: Session | None = None
        self.is_open = False
        #: Bytes sent to the page that it has not acknowledged yet.
        self.unacked = 0

    def credit(self) -> int:
        if not self.is_open or self.out.ws.closed:
            return 0
        return max(0, self.window - self.unacked)

    async def waiting(self, session: Session) -> None:
        self.session = session
        self.out.json(
            type="waiting",
            session=session.id,
            message=f"waiting for the customer on {session.device.name} to accept",
        )

    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        denied = code == ErrorCode.CONSENT_DENIED
        self.out.json(type="refused", state=state, code=code, denied=denied, message=message)
        self.out.close_soon(1000, "refused")

    async def opened(self, session: Session) -> None:
        self.session = session
        self.is_open = True
        self.out.json(
            type="opened", session=session.id, device=session.device.name, kind=session.kind
        )
        await self.broker.tech_accepted(session)

    async def send(self, data: bytes) -> None:
        self.unacked += len(data)
        self.out.binary(data)

    async def acknowledged(self, control: dict[str, Any]) -> None:
        """The page's ``ack``: it drew ``bytes`` more, so the device may send that much more."""
        size = control.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidMessage("ack needs a byte count")
        self.unacked = max(0, self.unacked - size)
        if self.session is not None:
            await self.broker.tech_credit(self.session)

    async def serve(
        self,
        session: Session,
        read_page: Callable[[], Awaitable[None]],
        refused: tuple[type[HelplineError], ...],
    ) -> None:
        """Run ``read_page`` (the page's messages) until the page or the session ends.

        A message refused with one of ``refused`` ends this session only: the page is told
        why and its socket closed with 1008. However it ends, the session ends with it.
        """
        try:
            await read_page()
        except refused as error:
            self.out.json(type="error", message=error.message)
            if not session.ended:
                await self.broker.tech_closed(session)
            await self.out.close(1008, "bad message")
            return
        finally:
            if not session.ended:
                await self.broker.tech_closed(session, lost=True)
        await self.out.close(1000, "session ended")
        await self.out.stop()

    async def exit_status(self, code: int, signal: str) -> None:
        self.out.json(type="exit", code=code, signal=signal)

    async def eof(self) -> None:
        self.out.json(type="eof")

    async def close(self, code: int, message: str) -> None:
        self.out.json(type="closed", code=code, message=message)
        self.out.close_soon(1000, "session ended")


def page_control(data: str) -> dict[str, Any]:
    """A page's text message: a JSON object with a ``type``, or InvalidMessage."""
    try:
        message = json.loads(data)
    except json.JSONDecodeError:
        raise InvalidMessage("a control message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidMessage("a control message needs a type")
    return message
