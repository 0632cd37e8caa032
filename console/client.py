"""The async client library the CLI, the tests and scripts use to talk to a relay.

:class:`HelplineClient` wraps the REST API (errors come back as the same
exception classes the relay raised, rebuilt from their stable codes) and
opens the console WebSocket (:class:`ConsoleSession`), which speaks the
Helpline protocol over a TLS connection pinned to the relay's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from certs.contexts import pinned_client_context
from protocol import (
    ChannelClosed,
    ChannelData,
    ChannelOpened,
    Connection,
    ConnectionState,
    CreditAvailable,
    Event,
    Heartbeat,
    Limits,
    ProtocolError,
    Role,
)
from protocol.auditchain import ChainReport, verify_chain
from protocol.errors import ErrorCode, HelplineError, error_from_code
from protocol.events import ChannelMessage
from protocol.frames import websocket_message_limit
from protocol.sessions import ChannelEof, ExitStatus, SessionRequest, SessionState, SessionStatus

from .sessions import PendingRequest, SessionChannel, StatusCallback

__all__ = ["ConsoleSession", "HelplineClient"]

CONSOLE_VERSION = "0.1.0"


class HelplineClient:
    def __init__(self, url: str, ca_pem: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._ssl = pinned_client_context(ca_pem)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use 'async with HelplineClient(...)'")
        return self._session

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        async with self.session.request(
            method,
            self.url + path,
            json=json,
            params=params,
            ssl=self._ssl,
            headers=self._headers(),
        ) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            if response.status >= 400:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                code = int(error.get("code", ErrorCode.INTERNAL))
                raise error_from_code(code, str(error.get("message", response.reason)))
            return body

    async def upload(self, path: str, file: Path) -> Any:
        """POST a file's bytes (streamed, not read into memory) and return the JSON answer."""
        with open(file, "rb") as stream:  # noqa: ASYNC230 - aiohttp streams it
            async with self.session.post(
                self.url + path,
                data=stream,
                ssl=self._ssl,
                headers={**self._headers(), "Content-Type": "application/octet-stream"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
            ) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status >= 400:
                    error = body.get("error", {}) if isinstance(body, dict) else {}
                    code = int(error.get("code", ErrorCode.INTERNAL))
                    raise error_from_code(code, str(error.get("message", response.reason)))
                return body

    # -- session ---------------------------------------------------------------------

    async def login(self, username: str, password: str, otp: str = "") -> dict[str, Any]:
        body = await self.request(
            "POST", "/api/v1/login", json={"username": username, "password": password, "otp": otp}
        )
        self.token = body["token"]
        return body  # type: ignore[no-any-return]

    async def logout(self) -> None:
        await self.request("POST", "/api/v1/logout")
        self.token = None

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/api/v1/me")  # type: ignore[no-any-return]

    # -- devices ---------------------------------------------------------------------

    async def devices(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/devices"))["devices"]  # type: ignore[no-any-return]

    async def device(self, key: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/v1/devices/{key}")  # type: ignore[no-any-return]

    async def revoke_device(self, key: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/devices/{key}/revoke")  # type: ignore[no-any-return]

    async def update_device(self, key: str, **changes: str) -> dict[str, Any]:
        return await self.request("PATCH", f"/api/v1/devices/{key}", json=changes)  # type: ignore[no-any-return]

    # -- users, groups, grants, tokens -------------------------------------------------

    async def users(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/users"))["users"]  # type: ignore[no-any-return]

    async def create_user(self, username: str, **fields: Any) -> dict[str, Any]:
        body = {"username": username, **{k: v for k, v in fields.items() if v is not None}}
        return await self.request("POST", "/api/v1/users", json=body)  # type: ignore[no-any-return]

    async def update_user(self, username: str, **changes: Any) -> dict[str, Any]:
        return await self.request("PATCH", f"/api/v1/users/{username}", json=changes)  # type: ignore[no-any-return]

    async def delete_user(self, username: str) -> None:
        await self.request("DELETE", f"/api/v1/users/{username}")

    async def unlock_user(self, username: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/users/{username}/unlock")  # type: ignore[no-any-return]

    async def reset_totp(self, username: str) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/users/{username}/reset-totp")  # type: ignore[no-any-return]

    async def groups(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/groups"))["groups"]  # type: ignore[no-any-return]

    async def create_group(self, name: str) -> dict[str, Any]:
        return await self.request("POST", "/api/v1/groups", json={"name": name})  # type: ignore[no-any-return]

    async def delete_group(self, name: str) -> None:
        await self.request("DELETE", f"/api/v1/groups/{name}")

    async def grants(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/grants"))["grants"]  # type: ignore[no-any-return]

    async def add_grant(self, username: str, group: str) -> None:
        await self.request("POST", "/api/v1/grants", json={"username": username, "group": group})

    async def remove_grant(self, username: str, group: str) -> None:
        await self.request("DELETE", f"/api/v1/grants/{username}/{group}")

    async def enrolment_tokens(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/enrolment-tokens"))["tokens"]  # type: ignore[no-any-return]

    async def create_enrolment_token(
        self, group: str = "default", *, expires_in: int | None = None, max_uses: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"group": group}
        if expires_in is not None:
            body["expires_in"] = expires_in
        if max_uses is not None:
            body["max_uses"] = max_uses
        return await self.request("POST", "/api/v1/enrolment-tokens", json=body)  # type: ignore[no-any-return]

    async def revoke_enrolment_token(self, token_id: int) -> None:
        await self.request("DELETE", f"/api/v1/enrolment-tokens/{token_id}")

    # -- audit -------------------------------------------------------------------------

    async def audit(
        self, *, after: int = 0, limit: int = 1000, **filters: str | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        params.update({k: v for k, v in filters.items() if v is not None})
        return await self.request("GET", "/api/v1/audit", params=params)  # type: ignore[no-any-return]

    async def audit_all(self) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """Every entry, in order, and the head the relay recorded outside its database."""
        entries: list[dict[str, Any]] = []
        after = 0
        head = None
        while True:
            page = await self.audit(after=after, limit=5000)
            head = page["head"]
            if not page["entries"]:
                break
            entries.extend(page["entries"])
            after = page["entries"][-1]["seq"]
        return entries, (None if head is None else (int(head["seq"]), str(head["hash"])))

    async def verify_audit(self) -> ChainReport:
        """Recompute the chain here, on the client: the relay's word is not taken for it."""
        entries, head = await self.audit_all()
        return verify_chain(entries, head=head)

    async def verify_recordings(self, entries: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
        """Hash every recording a ``session.end`` entry sealed; ``(seq, session, problem)``
        for each that is missing or differs."""
        problems: list[tuple[int, str, str]] = []
        for entry in entries:
            details = entry.get("details", {})
            expected = details.get("recording_sha256")
            if entry.get("action") != "session.end" or not expected:
                continue
            session_id = str(details.get("session", ""))
            try:
                data = await self.recording(session_id)
            except HelplineError as error:
                problems.append((entry["seq"], session_id, f"recording unavailable: {error}"))
                continue
            if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), str(expected)):
                problems.append((entry["seq"], session_id, "recording was altered"))
        return problems

    # -- sessions, recordings, keys ----------------------------------------------------------

    async def sessions(self, limit: int = 100) -> list[dict[str, Any]]:
        body = await self.request("GET", "/api/v1/sessions", params={"limit": limit})
        return body["sessions"]  # type: ignore[no-any-return]

    async def kill_session(self, session_id: str) -> None:
        await self.request("POST", f"/api/v1/sessions/{session_id}/kill")

    async def recordings(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/recordings"))["recordings"]  # type: ignore[no-any-return]

    async def recording(self, session_id: str) -> bytes:
        async with self.session.get(
            f"{self.url}/api/v1/recordings/{session_id}", ssl=self._ssl, headers=self._headers()
        ) as response:
            if response.status >= 400:
                body = await response.json(content_type=None)
                error = body.get("error", {}) if isinstance(body, dict) else {}
                raise error_from_code(int(error.get("code", 4000)), str(error.get("message", "")))
            return await response.read()

    async def keys(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/api/v1/keys"))["keys"]  # type: ignore[no-any-return]

    async def add_key(self, public_key: str, name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"public_key": public_key}
        if name:
            body["name"] = name
        return (await self.request("POST", "/api/v1/keys", json=body))["key"]  # type: ignore[no-any-return]

    async def remove_key(self, key: str) -> None:
        await self.request("DELETE", f"/api/v1/keys/{key}")

    # -- the console WebSocket -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect(self, *, heartbeat_interval: float = 30.0) -> AsyncIterator[ConsoleSession]:
        # The relay is authenticated (pinned CA) and sends one status per visible device at
        # connect: thousands of control messages in a burst are expected, not a flood.
        limits = Limits(control_rate=10_000.0, control_burst=100_000)
        ws = await self.session.ws_connect(
            self.url + "/api/v1/console",
            ssl=self._ssl,
            headers=self._headers(),
            heartbeat=None,
            max_msg_size=websocket_message_limit(limits.max_frame_size),
            compress=0,
        )
        console = ConsoleSession(ws, limits, heartbeat_interval)
        try:
            await console.start()
            yield console
        finally:
            await console.close()


class ConsoleSession:
    """The console's protocol connection: events arrive on a queue, sends are flushed in order."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, limits: Limits, heartbeat_interval: float
    ) -> None:
        self.ws = ws
        self.conn = Connection(Role.CONSOLE, limits=limits, software=f"helpline/{CONSOLE_VERSION}")
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.error: HelplineError | None = None
        self._lock = asyncio.Lock()
        self._heartbeat_interval = heartbeat_interval
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()
        self._channels: dict[int, SessionChannel] = {}
        self._pending: dict[int, PendingRequest] = {}
        self._request_ids = itertools.count(1)

    async def start(self) -> None:
        await self.flush()
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._heartbeats())]
        await self.ready.wait()
        if self.error is not None:
            raise self.error

    async def flush(self) -> None:
        async with self._lock:
            for frame in self.conn.data_to_send():
                if self.ws.closed:
                    return
                await self.ws.send_bytes(frame)

    async def _pump(self) -> None:
        try:
            async for message in self.ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    self.conn.receive_data(message.data)
                for event in self.conn.events_received():
                    if self.conn.peer is not None:
                        self.ready.set()
                    if not self._route(event):
                        await self.events.put(event)
                await self.flush()
                if self.conn.should_close_transport:
                    break
        except ProtocolError as error:
            self.error = error
            await self.flush()
        finally:
            self.conn.receive_eof()
            for event in self.conn.events_received():
                await self.events.put(event)
            for channel in self._channels.values():
                channel._closed(1006, "the connection to the relay was lost")
            for pending in self._pending.values():
                pending.refuse(1006, "the connection to the relay was lost")
            if self.error is None and self.ws.close_code not in (None, 1000):
                self.error = error_from_code(self.ws.close_code or 1006, "connection closed")
            self.ready.set()
            await self.ws.close()

    def _route(self, event: Event) -> bool:
        """Session traffic goes to its request or channel; True when consumed here."""
        if isinstance(event, SessionStatus):
            pending = self._pending.get(event.request)
            if pending is None:
                return False
            if event.state == SessionState.WAITING:
                if pending.on_status is not None:
                    pending.on_status(event.state, event.message)
            else:
                self._pending.pop(event.request, None)
                pending.refuse(event.code, event.message)
            return True
        if isinstance(event, ChannelOpened):
            try:
                request = int(event.params.get("request", "-1"))
            except ValueError:
                request = -1
            pending = self._pending.pop(request, None)
            if pending is None or pending.result.done():
                self.conn.reject_channel(event.channel, ErrorCode.NOT_FOUND, "no such request")
                return True
            self.conn.accept_channel(event.channel)
            channel = SessionChannel(
                self.conn,
                event.channel,
                event.params.get("session", ""),
                event.params.get("device", ""),
                self.flush,
            )
            self._channels[event.channel] = channel
            pending.result.set_result(channel)
            return True
        number = getattr(event, "channel", None)
        found = self._channels.get(number) if number is not None else None
        if found is None:
            return False
        channel = found
        if isinstance(event, ChannelData):
            channel._data(event.data)
        elif isinstance(event, CreditAvailable):
            channel._credit_available()
        elif isinstance(event, ChannelMessage):
            if isinstance(event.message, ExitStatus):
                channel._exit(event.message.code, event.message.signal)
            elif isinstance(event.message, ChannelEof):
                channel._eof()
            else:
                channel._message(event.message)
        elif isinstance(event, ChannelClosed):
            self._channels.pop(event.channel, None)
            channel._closed(event.code, event.message)
        return True

    async def open_session(
        self,
        device: str,
        kind: str = "shell",
        *,
        reason: str = "",
        params: dict[str, str] | None = None,
        on_status: StatusCallback | None = None,
    ) -> SessionChannel:
        """Ask for a session; returns its channel once the customer agreed.

        Raises ConsentDenied (denied or timed out), NotPermitted, NotFound... with
        the relay's reason.
        """
        request = next(self._request_ids)
        pending = PendingRequest(on_status)
        self._pending[request] = pending
        self.conn.send(
            SessionRequest(
                request=request, device=device, kind=kind, reason=reason, params=params or {}
            )
        )
        await self.flush()
        try:
            return await pending.result
        finally:
            self._pending.pop(request, None)

    async def _heartbeats(self) -> None:
        seq = 0
        while not self.ws.closed:
            await asyncio.sleep(self._heartbeat_interval)
            if self.conn.state is ConnectionState.OPEN:
                seq += 1
                self.conn.send(Heartbeat(seq=seq))
                await self.flush()

    async def next_event(self, within: float = 10.0) -> Event:
        """The next event; TimeoutError if none arrives ``within`` seconds."""
        async with asyncio.timeout(within):
            return await self.events.get()

    async def close(self) -> None:
        if not self.ws.closed and self.conn.state is ConnectionState.OPEN:
            self.conn.close(ErrorCode.NORMAL, "console closing")
            await self.flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()
