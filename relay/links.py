"""A WebSocket paired with its protocol :class:`Connection`, and the loop that pumps it.

This is the relay's whole adapter over the sans-I/O core: read a message, feed
it, act on the events, write what the connection queued. A protocol error
closes this one WebSocket with the error's code after the Goodbye is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from protocol import Connection, Event
from protocol.errors import ErrorCode, ProtocolError

log = logging.getLogger("helpline.links")


@dataclass(eq=False, slots=True)
class Link:
    """One WebSocket carrying one protocol :class:`Connection`."""

    ws: web.WebSocketResponse
    conn: Connection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: When the peer last sent anything (monotonic clock), for the idle watchdog.
    last_activity: float = field(default_factory=time.monotonic)
    #: The task writing what :meth:`flush_soon` asked for, while it runs.
    _writer: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _write_again: bool = field(default=False, init=False, repr=False)

    def flush_soon(self) -> None:
        """Have everything queued written by this link's writer task; return at once.

        What one peer sends is forwarded to another without waiting for that other
        peer's socket: the reading loop of an agent carrying a big download and a
        shell must not stall on the download's slow reader while the shell's echo
        waits behind it. Memory stays bounded by the channels' credit, not by this.
        """
        if self._writer is not None and not self._writer.done():
            self._write_again = True
            return
        self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        while True:
            self._write_again = False
            try:
                await self.flush()
            except (ConnectionError, RuntimeError) as exc:
                log.debug("%s: queued frames not written: %s", self, exc)
                return
            if not self._write_again:
                return

    async def flush(self) -> None:
        """Write everything the connection has queued, in order.

        A peer that went away loses what was queued for it; its read loop sees
        the close and ends the link.
        """
        async with self.lock:
            frames = self.conn.data_to_send()
            try:
                for frame in frames:
                    if self.ws.closed:
                        return
                    await self.ws.send_bytes(frame)
            except ConnectionError:
                return

    async def close(self, code: int, message: str) -> None:
        self.conn.close(code, message)
        await self.flush()
        await self.ws.close(code=code, message=message.encode()[:120])


@dataclass(eq=False, slots=True)
class AgentLink(Link):
    device_id: str = ""
    name: str = ""
    group: str = ""
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    address: str = ""

    def __str__(self) -> str:
        return f"agent {self.name!r} ({self.device_id}) from {self.address}"


@dataclass(eq=False, slots=True)
class ConsoleLink(Link):
    username: str = ""
    #: Whether this console may see a device of the given group.
    may_see: Callable[[str], bool] = lambda group: False

    def __str__(self) -> str:
        return f"console of {self.username!r}"


class IdleWatchdog:
    """Closes links whose peer has been silent too long: one timer for every link.

    A per-message receive timeout would cost each idle agent a timer and its
    bookkeeping that live for a whole heartbeat interval, long enough to reach
    the garbage collector's oldest generation; at ten thousand agents that made
    full collections, and their pauses, frequent.
    """

    def __init__(self) -> None:
        self._links: dict[Link, float] = {}

    def watch(self, link: Link, timeout: float) -> None:
        self._links[link] = timeout

    def forget(self, link: Link) -> None:
        self._links.pop(link, None)

    async def run(self, period: float = 2.0) -> None:
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            silent = [
                link for link, limit in self._links.items() if now - link.last_activity > limit
            ]
            for link in silent:
                self.forget(link)
                log.info("%s: silent for too long, closing", link)
                try:
                    await link.close(ErrorCode.GOING_AWAY, "no heartbeat")
                except (ConnectionError, RuntimeError):
                    continue


async def run_link(
    link: Link,
    on_event: Callable[[Event], Awaitable[None]],
    watchdog: IdleWatchdog,
    idle_timeout: float,
) -> None:
    """Pump one WebSocket through its Connection until either side closes.

    ``on_event`` is awaited for every event; a ProtocolError closes the
    WebSocket with the error's code after the Goodbye is flushed. A peer silent
    for ``idle_timeout`` seconds is closed by the ``watchdog``.
    """
    await link.flush()
    watchdog.watch(link, idle_timeout)
    try:
        await _pump(link, on_event)
    finally:
        watchdog.forget(link)


async def _pump(link: Link, on_event: Callable[[Event], Awaitable[None]]) -> None:
    ws, conn = link.ws, link.conn
    while not ws.closed:
        message = await ws.receive()
        link.last_activity = time.monotonic()
        if message.type is WSMsgType.BINARY:
            try:
                conn.receive_data(message.data)
            except ProtocolError as error:
                log.warning("protocol error from %s: %s (code %d)", link, error, error.code)
                await link.flush()
                await ws.close(code=error.code, message=error.message.encode()[:120])
                return
        elif message.type is WSMsgType.TEXT:
            conn.close(ErrorCode.MALFORMED_FRAME, "text messages are not part of the protocol")
            await link.flush()
            await ws.close(code=ErrorCode.MALFORMED_FRAME, message=b"text messages not allowed")
            return
        else:  # CLOSE, CLOSING, CLOSED, ERROR
            if message.type is WSMsgType.ERROR:
                log.warning("%s: transport error: %s", link, message.data)
            conn.receive_eof()
        try:
            for event in conn.events_received():
                await on_event(event)
        except ProtocolError as error:
            # The adapter refused what the protocol layer accepted (e.g. a peer in the wrong role).
            log.warning("refused by %s: %s (code %d)", link, error, error.code)
            await link.close(error.code, error.message)
            return
        await link.flush()
        if conn.should_close_transport:
            await ws.close()
            return
