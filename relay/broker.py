"""Sessions: authorise a request, ask the agent, bridge the channel, record, end.

The relay is an endpoint on both legs of a session: the agent's WebSocket and
the technician's leg (a console WebSocket, or an SSH channel from the
gateway), under the same channel id. Bytes from one leg are forwarded to the
other as that leg's credit allows; the sender's window is only granted back
once its bytes have been passed on, so a slow side holds the other back and
the relay never buffers more than one window per direction.

Everything that reaches a technician (data, end of input, exit status, the
close) goes through one ordered :class:`Outbox`, so an exit status never
overtakes the output before it.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol import (
    ChannelAccepted,
    ChannelClosed,
    ChannelData,
    ChannelRejected,
    CreditAvailable,
    Event,
    Message,
)
from protocol.errors import (
    ErrorCode,
    HelplineError,
    NotFound,
    NotPermitted,
    UsageError,
)
from protocol.events import ChannelMessage
from protocol.sessions import (
    ChannelEof,
    ConsentDecision,
    EndCode,
    ExitStatus,
    SessionKind,
    SessionState,
    TerminalResize,
)

from .api.devices import find_device
from .filetransfers import FileTransferAudit
from .legs import Outbox, TechnicianLeg
from .links import AgentLink
from .models import Device, SessionRecord, User, UserRole
from .observers import GuardedObserver, SessionObserver, ShellRecording
from .recorder import AsciicastRecorder
from .screens import (
    RECORDING_SUFFIX,
    SCREEN_KINDS,
    ScreenGuard,
    ScreenRecording,
    screen_input_allowed,
    screen_stream_ok,
)
from .state import RelayState

log = logging.getLogger("helpline.sessions")

#: Longest reason or parameter (a command...) a session request may carry.
MAX_PARAM_LENGTH = 1024
#: Kinds this relay brokers today.
SUPPORTED_KINDS = frozenset(
    {SessionKind.SHELL, SessionKind.FILES, SessionKind.UPDATE, *SCREEN_KINDS}
)
#: Request parameters passed on to the agent.
AGENT_PARAMS = ("term", "cols", "rows", "command", "pty", "monitor", "mode")
#: Parameters of an update session (relay/updates), passed on to the agent.
UPDATE_PARAMS = ("package", "version", "size", "downgrade", "timeout", "rollout")
#: End reasons, as audited, by ChannelClose code from the agent's side.
_AGENT_END_REASONS = {
    EndCode.CUSTOMER: "customer",
    EndCode.NORMAL: "exited",
}


@dataclass(eq=False)
class Session:
    id: str
    channel: int
    kind: str
    user: User
    device: Device
    reason: str
    params: dict[str, str]
    agent: AgentLink
    tech: TechnicianLeg
    state: SessionState = SessionState.REQUESTED
    requested_at: float = field(default_factory=time.time)
    started_at: float | None = None
    to_tech: Outbox = field(default_factory=Outbox)
    to_agent: Outbox = field(default_factory=Outbox)
    tech_ready: bool = False
    bytes_from_device: int = 0
    bytes_to_device: int = 0
    exit_code: int | None = None
    consent: str | None = None
    observer: SessionObserver = field(default_factory=SessionObserver)
    screen: ScreenGuard | None = None
    ending: tuple[str, int, str] | None = None  # (reason, code, message) once the agent closed
    ended: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.user.username,
            "device_id": self.device.id,
            "device_name": self.device.name,
            "kind": self.kind,
            "state": self.state.value,
            "via": self.tech.via,
            "requested_at": self.requested_at,
            "started_at": self.started_at,
            "bytes_to_device": self.bytes_to_device,
            "bytes_from_device": self.bytes_from_device,
        }


class Broker:
    def __init__(self, relay: RelayState) -> None:
        self.relay = relay
        self.sessions: dict[str, Session] = {}
        self._channels: dict[int, Session] = {}
        self._channel_ids = itertools.count(1)

    # -- starting ------------------------------------------------------------------------

    async def request(
        self,
        user: User,
        device_key: str,
        kind: str,
        reason: str,
        params: Mapping[str, str],
        tech: TechnicianLeg,
    ) -> Session | None:
        """Authorise, audit and forward a session request. Refusals go to ``tech.refused``."""
        relay = self.relay
        audit = relay.audit
        try:
            if user.role is UserRole.AUDITOR:
                raise NotPermitted("auditors cannot open sessions")
            if kind not in SUPPORTED_KINDS:
                raise NotPermitted(f"{kind} sessions are not available on this relay")
            if kind == SessionKind.UPDATE and tech.via != "update":
                raise NotPermitted(
                    "update sessions are opened by rollouts ('helpline update push')"
                )
            device = await find_device(relay, user, device_key)
            if device.revoked_at is not None:
                raise NotFound(f"device {device.name!r} is revoked")
        except HelplineError as error:
            await audit.record(
                user.username,
                "session.refused",
                device_key,
                kind=kind,
                reason=error.message,
                via=tech.via,
            )
            await tech.refused(None, SessionState.DENIED, error.code, error.message)
            return None
        agent = relay.presence.agents.get(device.id)
        session_id = uuid.uuid4().hex
        if agent is None:
            await audit.record(
                user.username,
                "session.refused",
                device.name,
                kind=kind,
                reason="device offline",
                via=tech.via,
            )
            await tech.refused(
                None, SessionState.FAILED, ErrorCode.NOT_FOUND, f"{device.name} is offline"
            )
            return None
        channel = next(self._channel_ids)
        session = Session(
            session_id, channel, kind, user, device, reason, dict(params), agent, tech
        )
        if kind in SCREEN_KINDS:
            session.screen = ScreenGuard(kind)
        self.sessions[session_id] = session
        self._channels[channel] = session
        await relay.store.create_session(
            SessionRecord(
                id=session_id,
                user_id=user.id,
                username=user.username,
                device_id=device.id,
                device_name=device.name,
                kind=kind,
                reason=reason,
                via=tech.via,
                state=SessionState.WAITING,
                requested_at=session.requested_at,
            )
        )
        await audit.record(
            user.username,
            "session.request",
            device.name,
            session=session_id,
            kind=kind,
            reason=reason,
            via=tech.via,
        )
        if any(len(value) > MAX_PARAM_LENGTH for value in (reason, *params.values())):
            await tech.refused(
                None,
                SessionState.FAILED,
                ErrorCode.INVALID_MESSAGE,
                f"command and reason are limited to {MAX_PARAM_LENGTH} characters",
            )
            return None
        agent_params = {
            **{k: v for k, v in params.items() if k in AGENT_PARAMS},
            **({k: v for k, v in params.items() if k in UPDATE_PARAMS} if kind == "update" else {}),
            "session": session_id,
            "technician": user.username,
            "technician_name": user.full_name,
            "reason": reason,
        }
        session.state = SessionState.WAITING
        agent.conn.open_channel(channel, kind, agent_params)
        await agent.flush()
        await tech.waiting(session)
        return session

    def by_channel(self, channel: int) -> Session | None:
        return self._channels.get(channel)

    # -- events from the agent's leg ------------------------------------------------------

    async def from_agent(self, link: AgentLink, event: Event) -> None:
        channel = getattr(event, "channel", None)
        session = self._channels.get(channel) if channel is not None else None
        if session is None or session.agent is not link:
            return
        if isinstance(event, ChannelMessage):
            message = event.message
            if isinstance(message, ConsentDecision):
                session.consent = f"{'granted' if message.granted else 'denied'}:{message.how}"
                await self.relay.audit.record(
                    message.by or session.device.name,
                    "session.consent",
                    session.device.name,
                    session=session.id,
                    granted=message.granted,
                    how=message.how,
                    technician=session.user.username,
                )
                if session.screen is not None and session.screen.consent(message):
                    await self.relay.audit.record(
                        message.by or session.device.name,
                        "session.control.granted",
                        session.device.name,
                        session=session.id,
                        technician=session.user.username,
                    )
            elif isinstance(message, ExitStatus):
                session.exit_code = message.code
                session.to_tech.put("exit", (message.code, message.signal))
                await self._drain_to_tech(session)
            elif isinstance(message, ChannelEof):
                session.to_tech.put("eof", None)
                await self._drain_to_tech(session)
            else:
                await session.observer.device_message(message)
                session.to_tech.put("message", message)
                await self._drain_to_tech(session)
        elif isinstance(event, ChannelData):
            if session.screen is not None and not await screen_stream_ok(self, session, event.data):
                return
            session.bytes_from_device += len(event.data)
            session.observer.device_data(event.data)
            session.to_tech.put("data", event.data)
            await self._drain_to_tech(session)
        elif isinstance(event, ChannelAccepted):
            await self._start(session)
        elif isinstance(event, ChannelRejected):
            denied = event.code == ErrorCode.CONSENT_DENIED
            state = SessionState.DENIED if denied else SessionState.FAILED
            await session.tech.refused(session, state, event.code, event.message)
            await self._finish(
                session, state, "denied" if denied else "refused by the device", event.message
            )
        elif isinstance(event, CreditAvailable):
            await self._drain_to_agent(session)
        elif isinstance(event, ChannelClosed):
            reason = _AGENT_END_REASONS.get(event.code, "device")  # type: ignore[call-overload]
            if event.code == EndCode.NORMAL and session.exit_code is None:
                reason = "device"
            session.ending = (reason, event.code, event.message or "session ended by the device")
            session.to_tech.put("close", (event.code, session.ending[2]))
            await self._drain_to_tech(session)

    async def _start(self, session: Session) -> None:
        session.state = SessionState.ACTIVE
        session.started_at = time.time()
        session.observer = GuardedObserver(self._observer_for(session))
        await self.relay.store.update_session(
            session.id,
            state=SessionState.ACTIVE,
            started_at=session.started_at,
            consent=session.consent,
        )
        await self.relay.audit.record(
            session.user.username,
            "session.start",
            session.device.name,
            session=session.id,
            kind=session.kind,
        )
        await session.tech.opened(session)
        await self._drain_to_agent(session)  # input the technician sent while waiting

    def _observer_for(self, session: Session) -> SessionObserver:
        config = self.relay.config
        if session.kind == SessionKind.SHELL:
            recorder = AsciicastRecorder(
                config.data_dir / "recordings" / f"{session.id}.cast",
                cols=_int(session.params.get("cols"), 80),
                rows=_int(session.params.get("rows"), 24),
                title=f"{session.user.username} on {session.device.name}",
                term=session.params.get("term", "xterm-256color"),
                technician=session.user.username,
                device=session.device.name,
                session_id=session.id,
                record_input=config.recording.record_input,
            )
            return ShellRecording(recorder, config.data_dir)
        if session.screen is not None:
            return ScreenRecording(
                config.data_dir / "recordings" / f"{session.id}{RECORDING_SUFFIX}",
                config.data_dir,
                session_id=session.id,
                technician=session.user.username,
                device=session.device.name,
                kind=session.kind,
            )
        if session.kind == SessionKind.FILES:
            copies = (
                config.data_dir / "recordings" / session.id if config.recording.keep_files else None
            )
            return FileTransferAudit(
                self.relay.audit,
                actor=session.user.username,
                device=session.device.name,
                session_id=session.id,
                copies=copies,
            )
        return SessionObserver()

    # -- events from the technician's leg --------------------------------------------------

    async def tech_accepted(self, session: Session) -> None:
        session.tech_ready = True
        await self._drain_to_tech(session)

    async def tech_credit(self, session: Session) -> None:
        await self._drain_to_tech(session)

    async def tech_data(self, session: Session, data: bytes) -> None:
        session.bytes_to_device += len(data)
        session.observer.tech_data(data)
        session.to_agent.put("data", data)
        await self._drain_to_agent(session)

    async def tech_resize(self, session: Session, cols: int, rows: int) -> None:
        session.observer.resize(cols, rows)
        session.to_agent.put("resize", (cols, rows))
        await self._drain_to_agent(session)

    async def tech_message(self, session: Session, message: Message) -> None:
        """An application message for the device (a file request...)."""
        if session.screen is not None and not await screen_input_allowed(self, session, message):
            return
        await session.observer.tech_message(message)
        session.to_agent.put("message", message)
        await self._drain_to_agent(session)

    async def tech_eof(self, session: Session) -> None:
        session.to_agent.put("eof", None)
        await self._drain_to_agent(session)

    async def tech_closed(self, session: Session, *, lost: bool = False) -> None:
        """The technician ended the session (or their connection went away)."""
        if session.ended:
            return
        code = EndCode.TECHNICIAN_LOST if lost else EndCode.NORMAL
        reason = "technician lost" if lost else "technician"
        await self._close_agent_leg(session, code, f"ended: {reason}")
        await self._finish(session, SessionState.ENDED, reason, "")

    # -- ending -----------------------------------------------------------------------------

    async def kill(self, session_id: str, admin: User) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound("no live session with that id")
        await self.relay.audit.record(
            admin.username,
            "session.kill",
            session.device.name,
            session=session.id,
            technician=session.user.username,
        )
        await self._end_both(session, EndCode.ADMIN, "admin", f"ended by admin {admin.username}")
        return session

    async def agent_lost(self, link: AgentLink) -> None:
        for session in [s for s in self.sessions.values() if s.agent is link]:
            await self._end_tech_only(
                session, EndCode.AGENT_LOST, "agent lost", "the device disconnected"
            )

    async def technician_lost(self, leg_matches: Callable[[TechnicianLeg], bool]) -> None:
        for session in [s for s in self.sessions.values() if leg_matches(s.tech)]:
            await self.tech_closed(session, lost=True)

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            await self._end_both(
                session, EndCode.RELAY_SHUTDOWN, "relay shutdown", "the relay is shutting down"
            )

    async def _end_both(self, session: Session, code: int, reason: str, message: str) -> None:
        await self._close_agent_leg(session, code, message)
        await self._end_tech_only(session, code, reason, message)

    async def _end_tech_only(self, session: Session, code: int, reason: str, message: str) -> None:
        if session.ended:
            return
        if session.state is SessionState.WAITING:
            await session.tech.refused(session, SessionState.FAILED, code, message)
        else:
            await _quietly(session.tech.close(code, message))
        await self._finish(session, SessionState.ENDED, reason, message)

    async def _close_agent_leg(self, session: Session, code: int, message: str) -> None:
        conn = session.agent.conn
        if conn.has_channel(session.channel):
            conn.close_channel(session.channel, code, message)
            await _quietly(session.agent.flush())

    async def _finish(
        self, session: Session, state: SessionState, reason: str, message: str
    ) -> None:
        if session.ended:
            return
        session.ended = True
        session.state = state
        self.sessions.pop(session.id, None)
        self._channels.pop(session.channel, None)
        ended_at = time.time()
        kept = await session.observer.close()
        recording = kept.get("recording")
        sha256 = kept.get("recording_sha256")
        await self.relay.store.update_session(
            session.id,
            state=state,
            end_reason=reason,
            ended_at=ended_at,
            consent=session.consent,
            bytes_to_device=session.bytes_to_device,
            bytes_from_device=session.bytes_from_device,
            exit_code=session.exit_code,
            recording=recording,
            recording_sha256=sha256,
        )
        duration = None if session.started_at is None else round(ended_at - session.started_at, 3)
        details: dict[str, Any] = {
            "session": session.id,
            "reason": reason,
            "state": state.value,
            "duration": duration,
            "bytes_to_device": session.bytes_to_device,
            "bytes_from_device": session.bytes_from_device,
            "technician": session.user.username,
        }
        if message:
            details["message"] = message
        if session.exit_code is not None:
            details["exit_code"] = session.exit_code
        if session.screen is not None and session.screen.refused_inputs:
            details["input_refused"] = session.screen.refused_inputs
        if recording is not None:
            details["recording"] = recording
            details["recording_sha256"] = sha256
        await self.relay.audit.record(
            session.user.username, "session.end", session.device.name, **details
        )
        log.info("session %s ended: %s", session.id, reason)

    # -- moving bytes --------------------------------------------------------------------------

    async def _drain_to_tech(self, session: Session) -> None:
        if not session.tech_ready:
            return  # tech_accepted drains it all, in order; a refusal goes through tech_closed
        agent_conn = session.agent.conn

        async def deliver(kind: str, value: Any) -> None:
            if kind == "data":
                await session.tech.send(value)
                if agent_conn.has_channel(session.channel):
                    agent_conn.acknowledge(session.channel, len(value))
                    session.agent.flush_soon()
            elif kind == "exit":
                await session.tech.exit_status(*value)
            elif kind == "eof":
                await session.tech.eof()
            elif kind == "message":
                await session.tech.message(value)
                await session.observer.delivered(value)
            elif kind == "close":
                code, message = value
                await _quietly(session.tech.close(code, message))
                reason = session.ending[0] if session.ending else "device"
                await self._finish(session, SessionState.ENDED, reason, message)

        try:
            await session.to_tech.drain(session.tech.credit, deliver)
        except UsageError as error:
            # The technician's side is out of step: end the session there, never let it
            # take the agent's connection (and its other sessions) down with it.
            log.warning("session %s: technician leg failed: %s", session.id, error)
            await self.tech_closed(session, lost=True)

    async def _drain_to_agent(self, session: Session) -> None:
        if session.state is not SessionState.ACTIVE:
            return
        conn = session.agent.conn
        channel = session.channel
        if not conn.has_channel(channel):
            return

        def credit() -> int:
            try:
                return conn.send_credit(channel)
            except Exception:  # the channel is closing
                return 0

        async def deliver(kind: str, value: Any) -> None:
            if kind == "data":
                conn.send_data(channel, value)
                await session.tech.consumed(len(value))
            elif kind == "resize":
                conn.send_channel_message(channel, TerminalResize(cols=value[0], rows=value[1]))
            elif kind == "eof":
                conn.send_channel_message(channel, ChannelEof())
            elif kind == "message":
                try:
                    conn.send_channel_message(channel, value)
                except UsageError:
                    log.warning("dropped a %s the relay may not forward", value.TYPE)

        await session.to_agent.drain(credit, deliver)
        session.agent.flush_soon()

    def live(self) -> list[Session]:
        return list(self.sessions.values())


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, min(1000, int(value))) if value is not None else default
    except ValueError:
        return default


async def _quietly(awaitable: Awaitable[None]) -> None:
    """Best effort toward a peer that may already be gone."""
    try:
        await awaitable
    except (ConnectionError, RuntimeError) as exc:
        log.debug("ignored while ending a session: %s", exc)


__all__ = ["Broker", "Session"]
