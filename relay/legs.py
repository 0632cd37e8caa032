"""The technician's side of a session (:class:`TechnicianLeg`) and the ordered queue of
what waits to reach either side (:class:`Outbox`).

A leg is a console WebSocket (:mod:`relay.consoles`), an SSH channel or an SFTP
server (:mod:`relay.sshgate`); the broker talks to all of them through this one
interface.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from protocol import Message

if TYPE_CHECKING:
    from .broker import Session

log = logging.getLogger("helpline.sessions")


class TechnicianLeg(ABC):
    """The technician's side of one session."""

    via = "console"

    @abstractmethod
    def credit(self) -> int:
        """Bytes that may be sent to the technician right now."""

    @abstractmethod
    async def waiting(self, session: Session) -> None:
        """The agent is asking the customer."""

    @abstractmethod
    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        """The request ended before any channel opened (denied, failed, not permitted)."""

    @abstractmethod
    async def opened(self, session: Session) -> None:
        """Consent granted: open the channel toward the technician."""

    @abstractmethod
    async def send(self, data: bytes) -> None: ...

    @abstractmethod
    async def consumed(self, size: int) -> None:
        """``size`` bytes from the technician were passed on: grant them back."""

    @abstractmethod
    async def exit_status(self, code: int, signal: str) -> None: ...

    @abstractmethod
    async def eof(self) -> None: ...

    @abstractmethod
    async def close(self, code: int, message: str) -> None:
        """The session is over for a reason other than this leg closing it."""

    async def message(self, message: Message) -> None:
        """An application message from the device (file replies...). Legs that carry
        only terminals ignore them."""
        log.debug("%s leg ignores %s", self.via, message.TYPE)


Item = tuple[str, Any]


class Outbox:
    """What waits to go one way: ("data", bytes) | ("exit", (code, signal)) | ("eof", None)
    | ("resize", (cols, rows)) | ("close", (code, message)), in order."""

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self.size = 0

    def put(self, kind: str, value: Any) -> None:
        self.items.append((kind, value))
        if kind == "data":
            self.size += len(value)

    async def drain(
        self, credit: Callable[[], int], deliver: Callable[[str, Any], Awaitable[None]]
    ) -> None:
        """Deliver items in order; data only as far as ``credit()`` allows."""
        while self.items:
            kind, value = self.items[0]
            if kind == "data":
                room = credit()
                if room <= 0:
                    return
                if len(value) > room:
                    self.items[0] = (kind, value[room:])
                    value = value[:room]
                else:
                    self.items.popleft()
                self.size -= len(value)
            else:
                self.items.popleft()
            await deliver(kind, value)
