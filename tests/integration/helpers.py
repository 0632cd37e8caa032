"""Small helpers shared by the integration tests: raw REST calls (to see HTTP statuses),
fresh users, CLI logins, audit look-ups, and raw WebSocket connections that speak (or
deliberately break) the Helpline protocol with a real agent's certificate or a console's
bearer token."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from certs.contexts import pinned_client_context
from console.client import HelplineClient
from protocol import Connection, Limits, Role
from protocol.frames import FrameKind, FrameParser, websocket_message_limit
from protocol.messages import Goodbye, Message, decode_message

from .conftest import RelayProcess, run_helpline, totp_now


async def api(
    relay: RelayProcess,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
) -> tuple[int, dict[str, Any]]:
    """One REST call with the relay's CA pinned: ``(HTTP status, JSON body)``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            relay.url + path,
            json=body,
            headers=headers,
            ssl=pinned_client_context(relay.ca_pem),
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


@dataclass
class NewUser:
    username: str
    password: str
    totp_secret: str
    role: str

    def code(self, step_offset: int = 0) -> str:
        return totp_now(self.totp_secret, step_offset=step_offset)


async def new_user(
    admin: HelplineClient, username: str, role: str = "technician", **fields: Any
) -> NewUser:
    body = await admin.create_user(username, role=role, **fields)
    return NewUser(username, body["password"], body["totp_secret"], role)


@asynccontextmanager
async def logged_in(relay: RelayProcess, user: NewUser) -> AsyncIterator[HelplineClient]:
    async with HelplineClient(relay.url, relay.ca_pem) as client:
        await client.login(user.username, user.password, user.code())
        yield client


def cli_login(
    relay: RelayProcess, config: Path, username: str, password: str, otp: str
) -> subprocess.CompletedProcess[str]:
    result = run_helpline(
        config,
        "login",
        relay.url,
        "--user",
        username,
        "--password-stdin",
        "--otp",
        otp,
        "--ca-fingerprint",
        relay.ca_fingerprint,
        stdin=password + "\n",
    )
    assert result.returncode == 0, result.stderr
    return result


async def audit_entries(
    client: HelplineClient, action: str | None = None, target: str | None = None
) -> list[dict[str, Any]]:
    page = await client.audit(limit=5000, action=action, target=target)
    return list(page["entries"])


@contextmanager
def relay_db(relay: RelayProcess) -> Iterator[sqlite3.Connection]:
    """A direct connection to the relay's SQLite database (what an attacker on disk has)."""
    db = sqlite3.connect(relay.data_dir / "relay.db", timeout=10, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def rest(
    relay: RelayProcess, method: str, path: str, *, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    """A blocking REST call (for fixtures that run outside the event loop)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", relay.port, timeout=30, context=pinned_client_context(relay.ca_pem)
    )
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def admin_token(relay: RelayProcess, step_offset: int = 0) -> str:
    """Log the first admin in without an event loop; returns the bearer token."""
    status, body = rest(
        relay,
        "POST",
        "/api/v1/login",
        body={
            "username": relay.admin["username"],
            "password": relay.admin["password"],
            "otp": totp_now(relay.admin["totp_secret"], step_offset=step_offset),
        },
    )
    assert status == 200, body
    return str(body["token"])


def backoff_ceilings(agent_dir: Path, count: int) -> list[float]:
    """The most each of the first ``count`` reconnection delays may be, per the agent's
    own config: ``min(backoff_max, backoff_initial * 2**n)``, as logged (one decimal)."""
    connection = tomllib.loads((agent_dir / "agent.toml").read_text())["connection"]
    base, cap = float(connection["backoff_initial"]), float(connection["backoff_max"])
    return [min(cap, base * 2**n) + 0.05 for n in range(count)]


# -- raw protocol connections ------------------------------------------------------------


@dataclass
class Closed:
    """How the relay ended a raw connection: the Goodbye codes it sent, then the close."""

    goodbyes: list[Goodbye]
    close_code: int | None
    close_reason: str


class RawLink:
    """A WebSocket to the relay whose frames the test writes by hand.

    ``conn`` is a real protocol :class:`Connection` used to produce a valid Hello
    and to read the relay's frames; anything else is sent as raw bytes.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, role: Role) -> None:
        self.ws = ws
        self.conn = Connection(role, limits=Limits(), software="helpline-tests/0")
        self.parser = FrameParser(Limits().max_frame_size)

    async def send_hello(self) -> None:
        for frame in self.conn.data_to_send():
            await self.ws.send_bytes(frame)

    async def send_message(self, message: Message) -> None:
        self.conn.send(message)
        for frame in self.conn.data_to_send():
            await self.ws.send_bytes(frame)

    async def next_message(self, within: float = 10.0) -> Message:
        """The next control message from the relay (raises if the socket closes)."""
        message = await self.ws.receive(timeout=within)
        assert message.type is aiohttp.WSMsgType.BINARY, f"expected a frame, got {message!r}"
        frames = self.parser.feed(message.data)
        assert len(frames) == 1 and frames[0].kind is FrameKind.CONTROL
        decoded = decode_message(frames[0].body, Limits())
        self.conn.receive_data(message.data)  # keep our side's state in step (Hello...)
        self.conn.events_received()
        return decoded

    async def wait_closed(self, within: float = 10.0) -> Closed:
        """Read until the relay closes; collect the Goodbye frames it sent first."""
        goodbyes: list[Goodbye] = []
        while True:
            message = await self.ws.receive(timeout=within)
            if message.type is aiohttp.WSMsgType.BINARY:
                for frame in self.parser.feed(message.data):
                    decoded = decode_message(frame.body, Limits())
                    if isinstance(decoded, Goodbye):
                        goodbyes.append(decoded)
                continue
            assert message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ), f"unexpected {message!r}"
            reason = message.extra if isinstance(message.extra, str) else ""
            return Closed(goodbyes, self.ws.close_code, reason)


@asynccontextmanager
async def raw_agent_link(relay: RelayProcess, agent_dir: Path) -> AsyncIterator[RawLink]:
    """A WSS connection to /agent/v1/connect with the agent's own cert and key (mTLS)."""
    context = pinned_client_context(
        (agent_dir / "ca.pem").read_text(), agent_dir / "agent.pem", agent_dir / "agent.key"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            relay.url + "/agent/v1/connect",
            ssl=context,
            heartbeat=None,
            autoping=True,
            max_msg_size=websocket_message_limit(Limits().max_frame_size),
            compress=0,
        ) as ws,
    ):
        yield RawLink(ws, Role.AGENT)


@asynccontextmanager
async def raw_console_link(relay: RelayProcess, token: str) -> AsyncIterator[RawLink]:
    """A WSS connection to /api/v1/console with a bearer token."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            relay.url + "/api/v1/console",
            ssl=pinned_client_context(relay.ca_pem),
            headers={"Authorization": f"Bearer {token}"},
            heartbeat=None,
            autoping=True,
            max_msg_size=websocket_message_limit(Limits().max_frame_size),
            compress=0,
        ) as ws,
    ):
        yield RawLink(ws, Role.CONSOLE)


def agent_log_count(log: str, needle: str) -> int:
    return sum(1 for line in log.splitlines() if needle in line)
