"""Sessions seen from the console: asking for one, and the channel that carries it.

:meth:`ConsoleSession.open_session` sends a ``SessionRequest`` and waits: the
relay reports ``waiting`` while the customer decides, then either a refusal
(raised as the matching :class:`~protocol.errors.HelplineError`, e.g.
:class:`~protocol.errors.ConsentDenied` with the reason) or a channel, which
becomes a :class:`SessionChannel`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protocol import Connection, Message
from protocol.errors import HelplineError, UsageError, error_from_code
from protocol.sessions import ChannelEof, TerminalResize

__all__ = ["SessionChannel", "SessionClosed", "StatusCallback"]

StatusCallback = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class SessionClosed:
    code: int
    message: str


class SessionChannel:
    """One granted session: read its output, write input, resize, learn how it ended."""

    def __init__(
        self,
        conn: Connection,
        channel: int,
        session_id: str,
        device: str,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.conn = conn
        self.channel = channel
        self.session_id = session_id
        self.device = device
        self._flush = flush
        self._incoming: asyncio.Queue[bytes | Message | None] = asyncio.Queue()
        self._credit = asyncio.Event()
        self.exit_status: tuple[int, str] | None = None
        self.closed: asyncio.Future[SessionClosed] = asyncio.get_running_loop().create_future()
        self.remote_eof = False
        #: Messages :meth:`read` stepped over, in order; None once closed.
        self.messages: asyncio.Queue[Message | None] = asyncio.Queue()

    # -- fed by the connection ----------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    def _credit_available(self) -> None:
        self._credit.set()

    def _exit(self, code: int, signal: str) -> None:
        self.exit_status = (code, signal)

    def _eof(self) -> None:
        self.remote_eof = True

    def _message(self, message: Message) -> None:
        self._incoming.put_nowait(message)

    def _closed(self, code: int, message: str) -> None:
        if not self.closed.done():
            self.closed.set_result(SessionClosed(code, message))
        self._incoming.put_nowait(None)
        self._credit.set()

    # -- for the application ------------------------------------------------------------------

    async def receive(self) -> bytes | Message | None:
        """The next thing the device sent, data and messages in the order they were sent;
        ``None`` once the session is closed. Data is acknowledged as it is handed out."""
        item = await self._incoming.get()
        if item is None:
            self._incoming.put_nowait(None)  # stay at the end for later readers
        elif isinstance(item, bytes):
            self.conn.acknowledge(self.channel, len(item))
            await self._flush()
        return item

    async def read(self) -> bytes:
        """Output as it arrives; ``b""`` once the session is closed. Messages met on the
        way are set aside on :attr:`messages`."""
        while True:
            item = await self.receive()
            if item is None:
                self.messages.put_nowait(None)
                return b""
            if isinstance(item, bytes):
                return item
            self.messages.put_nowait(item)

    async def write(self, data: bytes) -> None:
        """Send input, waiting for window when the device is behind."""
        view = memoryview(data)
        while view:
            if self.closed.done():
                return
            try:
                credit = self.conn.send_credit(self.channel)
            except UsageError:
                return
            if credit <= 0:
                self._credit.clear()
                await self._credit.wait()
                continue
            self.conn.send_data(self.channel, bytes(view[:credit]))
            view = view[credit:]
            await self._flush()

    async def resize(self, cols: int, rows: int) -> None:
        if not self.closed.done():
            self.conn.send_channel_message(self.channel, TerminalResize(cols=cols, rows=rows))
            await self._flush()

    async def send_message(self, message: Message) -> None:
        """An application message to the device (a file request...)."""
        if self.closed.done():
            closed = self.closed.result()
            raise error_from_code(closed.code if closed.code >= 4000 else 4000, closed.message)
        self.conn.send_channel_message(self.channel, message)
        await self._flush()

    async def send_eof(self) -> None:
        if not self.closed.done():
            self.conn.send_channel_message(self.channel, ChannelEof())
            await self._flush()

    async def close(self) -> None:
        """End the session from the technician's side and wait for the relay to confirm."""
        if not self.closed.done():
            self.conn.close_channel(self.channel)
            await self._flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 10)

    async def wait_closed(self) -> SessionClosed:
        return await self.closed


class PendingRequest:
    """A SessionRequest waiting for its answer."""

    def __init__(self, on_status: StatusCallback | None) -> None:
        self.on_status = on_status
        self.result: asyncio.Future[SessionChannel] = asyncio.get_running_loop().create_future()

    def refuse(self, code: int, message: str) -> None:
        if not self.result.done():
            error: HelplineError = error_from_code(code or 4000, message or "session refused")
            self.result.set_exception(error)
