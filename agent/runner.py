"""The agent's connection loop: connect out over WSS with mTLS, speak, reconnect forever.

One connection at a time. While connected: Hello, then the inventory, then a
heartbeat every ``heartbeat_interval``; the relay's silence for three
intervals counts as a dead link. On any end (relay restart, network cut,
refusal) the agent waits per :class:`~agent.backoff.Backoff` and tries again;
the backoff resets once a connection got as far as the relay's Hello.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import aiohttp

from certs.contexts import pinned_client_context
from protocol import (
    Connection,
    ConnectionClosed,
    ConnectionState,
    Event,
    Heartbeat,
    Hello,
    Limits,
    ProtocolError,
    Role,
)
from protocol.errors import ErrorCode
from protocol.frames import websocket_message_limit
from protocol.updates import AgentUpdateReport

from .backoff import Backoff
from .config import AgentConfig
from .consent import ConsentPolicy
from .inventory import AGENT_VERSION, collect_inventory
from .sessions import SessionHost
from .updates.selfupdate import pending_report, report_sent

log = logging.getLogger("helpline.agent")

AGENT_PATH = "/agent/v1/connect"


class AgentRunner:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)
        # The relay is authenticated (pinned CA): its bursts, e.g. many sessions opened at
        # once, are not floods to defend against, so the control rate is generous.
        self.limits = Limits(control_rate=10_000.0, control_burst=100_000)
        self.connected = asyncio.Event()
        self.sessions = SessionHost(config, ConsentPolicy(config.consent, config.prompt_timeout))
        self._heartbeat_seq = 0
        #: An agent-update report queued on this connection, confirmed once flushed.
        self._report: dict[str, str] | None = None

    def ssl_context(self) -> ssl.SSLContext:
        return pinned_client_context(
            self.config.ca_file.read_text(), self.config.cert_file, self.config.key_file
        )

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once(stop)
            except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as exc:
                log.warning("connection to relay failed: %s", _describe(exc))
            self.connected.clear()
            if stop.is_set():
                break
            delay = self.backoff.next_delay()
            log.info("reconnecting in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def run_once(self, stop: asyncio.Event) -> None:
        url = self.config.url + AGENT_PATH
        timeout = aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(
                url,
                ssl=self.ssl_context(),
                heartbeat=None,
                autoping=True,
                max_msg_size=websocket_message_limit(self.limits.max_frame_size),
                compress=0,
            ) as ws,
        ):
            conn = Connection(
                Role.AGENT, limits=self.limits, software=f"helpline-agent/{AGENT_VERSION}"
            )
            link = RelayLink(conn, ws)
            self.sessions.attach(conn, link.flush)
            heartbeats = asyncio.create_task(self._heartbeats(link))
            # Two tasks raced once per connection, not per message: the loop itself awaits
            # the WebSocket directly, which keeps a keystroke's path short.
            pump = asyncio.create_task(self._pump(link))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({pump, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if pump.done():
                    pump.result()  # the loop's error, if it ended with one
            finally:
                pump.cancel()
                heartbeats.cancel()
                stopper.cancel()
                await self.sessions.connection_lost()
                if not ws.closed:
                    conn.close(ErrorCode.GOING_AWAY, "agent stopping")
                    await link.flush()
                    await ws.close()

    async def _pump(self, link: RelayLink) -> None:
        conn, ws = link.conn, link.ws
        await link.flush()
        idle_limit = self.config.heartbeat_interval * 3
        while not ws.closed:
            try:
                message = await ws.receive(timeout=idle_limit)
            except TimeoutError:
                raise TimeoutError("relay silent for three heartbeat intervals") from None
            if message.type is aiohttp.WSMsgType.BINARY:
                try:
                    conn.receive_data(message.data)
                except ProtocolError:
                    await link.flush()
                    raise
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                code = ws.close_code or 1006
                log.info("relay closed the connection (code %s)", code)
                conn.receive_eof()
            for event in conn.events_received():
                await self._handle(conn, event)
            await link.flush()
            if self._report is not None and not ws.closed:
                report_sent(self.config, self._report)
                self._report = None
            if conn.should_close_transport:
                return

    async def _handle(self, conn: Connection, event: Event) -> None:
        if isinstance(event, Hello):
            conn.send(collect_inventory())
            self.backoff.reset()
            self.connected.set()
            log.info("connected to relay as %s", self.config.name)
            report = pending_report(self.config)
            if report is not None:
                try:
                    conn.send(AgentUpdateReport(**report))
                    self._report = report
                    log.info("reported agent update: %s", report.get("outcome"))
                except (TypeError, ProtocolError) as exc:
                    log.warning("dropped a malformed agent update report: %s", exc)
        elif getattr(event, "channel", None) is not None:
            await self.sessions.handle(event)
        elif isinstance(event, ConnectionClosed):
            log.info("relay said goodbye: %s (%d)", event.message, event.code)

    async def _heartbeats(self, link: RelayLink) -> None:
        while not link.ws.closed:
            await asyncio.sleep(self.config.heartbeat_interval)
            if link.conn.state is not ConnectionState.OPEN:
                continue
            self._heartbeat_seq += 1
            link.conn.send(Heartbeat(seq=self._heartbeat_seq))
            with contextlib.suppress(ConnectionError):
                await link.flush()


class RelayLink:
    """The agent's one WebSocket to the relay and its protocol :class:`Connection`.

    Frames are taken from the connection under a lock, so two tasks flushing
    at once (the message loop and the heartbeat timer) cannot reorder them.
    """

    def __init__(self, conn: Connection, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.conn = conn
        self.ws = ws
        self._lock = asyncio.Lock()

    async def flush(self) -> None:
        async with self._lock:
            for frame in self.conn.data_to_send():
                if self.ws.closed:
                    return
                await self.ws.send_bytes(frame)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"relay refused the connection ({exc.status}: device unknown or revoked?)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLError):
        return f"TLS failed: {exc}"
    return str(exc) or type(exc).__name__
