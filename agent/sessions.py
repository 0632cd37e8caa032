"""The agent's side of sessions: consent, then a shell bridged to the relay's channel.

For every channel the relay opens, the agent asks :class:`~agent.consent.ConsentPolicy`
(the agent is the authority: the relay cannot skip this), reports the decision,
then accepts or rejects. A granted shell runs on a PTY; its output is sent as
the channel's credit allows and input is acknowledged once written. A granted
``view`` or ``control`` session streams the screen (:mod:`agent.screen`). The
customer can end any session: from the notice window, or with
``helpline-agent sessions end``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from protocol import (
    ChannelClosed,
    ChannelData,
    ChannelOpened,
    Connection,
    CreditAvailable,
    Event,
)
from protocol.errors import ErrorCode, UsageError
from protocol.events import ChannelMessage
from protocol.sessions import (
    ChannelEof,
    ConsentDecision,
    EndCode,
    ExitStatus,
    SessionKind,
    TerminalResize,
)

from .config import AgentConfig
from .consent import ConsentPolicy, ConsentRequest, Notice
from .files import FileRoots, FileService
from .screen.capture import CaptureError
from .screen.streamer import ScreenStreamer, parse_mode
from .shell import ShellProcess, login_shell, session_environment, working_directory
from .updates import UpdateService

log = logging.getLogger("helpline.agent.sessions")

#: Session kinds this agent offers.
_KINDS = frozenset({SessionKind.SHELL, SessionKind.FILES, SessionKind.VIEW, SessionKind.CONTROL})

Flush = Callable[[], Awaitable[None]]


def _int(params: dict[str, str], key: str, default: int) -> int:
    try:
        return max(1, min(1000, int(params.get(key, default))))
    except ValueError:
        return default


@dataclass(eq=False)
class HostedSession:
    channel: int
    id: str
    kind: str
    technician: str
    reason: str
    started: float = field(default_factory=time.time)
    shell: ShellProcess | None = None
    files: FileService | None = None
    screen: ScreenStreamer | None = None
    update: UpdateService | None = None
    notice: Notice | None = None
    credit: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` for this session; finished tasks are forgotten at once."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    closed: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "session": self.id,
            "kind": self.kind,
            "technician": self.technician,
            "reason": self.reason,
            "started": self.started,
        }


class SessionHost:
    def __init__(self, config: AgentConfig, consent: ConsentPolicy) -> None:
        self.config = config
        self.consent = consent
        self.roots = FileRoots(config.file_roots)
        self.sessions: dict[int, HostedSession] = {}
        self._conn: Connection | None = None
        self._flush: Flush | None = None

    def attach(self, conn: Connection, flush: Flush) -> None:
        """A new connection to the relay (sessions never survive a reconnect)."""
        self._conn = conn
        self._flush = flush

    def _shell_open(self) -> bool:
        """Whether a shell session shares the connection (downloads then yield to it)."""
        return any(session.shell is not None for session in self.sessions.values())

    async def _send(self) -> None:
        if self._flush is not None:
            await self._flush()

    # -- events -------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if isinstance(event, ChannelOpened):
            session = HostedSession(
                event.channel,
                event.params.get("session", "?"),
                event.kind,
                event.params.get("technician", "?"),
                event.params.get("reason", ""),
            )
            self.sessions[event.channel] = session
            session.spawn(self._run(session, dict(event.params)))
            return
        number = getattr(event, "channel", None)
        found = self.sessions.get(number) if number is not None else None
        if found is None:
            return
        session = found
        if session.files is not None:
            await self._to_files(session, session.files, event)
            return
        if session.screen is not None:
            await self._to_screen(session, session.screen, event)
            return
        if session.update is not None:
            await self._to_update(session, session.update, event)
            return
        if isinstance(event, ChannelData):
            if session.shell is not None:
                # Queued now, so the input keeps its order with a later end of input.
                taken = session.shell.feed(event.data)
                session.spawn(self._acknowledge_when_taken(session, taken, len(event.data)))
        elif isinstance(event, CreditAvailable):
            session.credit.set()
        elif isinstance(event, ChannelMessage):
            message = event.message
            if isinstance(message, TerminalResize) and session.shell is not None:
                session.shell.resize(message.cols, message.rows)
            elif isinstance(message, ChannelEof) and session.shell is not None:
                session.shell.end_of_input()
        elif isinstance(event, ChannelClosed):
            session.closed = True
            await self._teardown(session)

    async def _to_files(self, session: HostedSession, files: FileService, event: Event) -> None:
        if isinstance(event, ChannelData):
            await files.handle_data(event.data)
        elif isinstance(event, ChannelMessage):
            await files.handle_message(event.message)
        elif isinstance(event, CreditAvailable):
            files.credit_available()
        elif isinstance(event, ChannelClosed):
            session.closed = True
            await self._teardown(session)

    async def _to_screen(
        self, session: HostedSession, screen: ScreenStreamer, event: Event
    ) -> None:
        if isinstance(event, ChannelMessage):
            await screen.handle(event.message)
        elif isinstance(event, CreditAvailable):
            screen.credit_available()
        elif isinstance(event, ChannelData):  # a viewer sends no data: drop it, keep the window
            if self._conn is not None:
                self._conn.acknowledge(session.channel, len(event.data))
        elif isinstance(event, ChannelClosed):
            session.closed = True
            await self._teardown(session)

    async def _to_update(self, session: HostedSession, update: UpdateService, event: Event) -> None:
        if isinstance(event, ChannelData):
            await update.handle_data(event.data)
        elif isinstance(event, ChannelClosed):
            session.closed = True
            await self._teardown(session)

    async def _acknowledge_when_taken(
        self, session: HostedSession, taken: asyncio.Future[None], size: int
    ) -> None:
        await asyncio.shield(taken)  # one cancelled waiter must not cancel a shared drain
        if self._conn is not None and not session.closed:
            self._conn.acknowledge(session.channel, size)
            await self._send()

    # -- a session's life ---------------------------------------------------------------------

    async def _run(self, session: HostedSession, params: dict[str, str]) -> None:
        conn = self._conn
        assert conn is not None
        request = ConsentRequest(
            session=session.id,
            kind=session.kind,
            technician=session.technician,
            technician_name=params.get("technician_name", session.technician),
            reason=session.reason,
            device=self.config.name,
        )
        if session.kind == SessionKind.UPDATE:
            session.update = UpdateService(
                self.config, conn, session.channel, self._send, params, session.id, session.spawn
            )
            problem = session.update.problem_before_start()
            if problem is not None:
                conn.reject_channel(session.channel, ErrorCode.NOT_PERMITTED, problem)
                self.sessions.pop(session.channel, None)
                await self._send()
                log.warning("update %s refused: %s", session.id, problem)
                return
            what = f"install {params.get('package', '?')} {params.get('version', '?')}"
            request = dataclasses.replace(
                request, reason=f"{what}: {session.reason}" if session.reason else what
            )
        elif session.kind not in _KINDS:
            conn.reject_channel(
                session.channel,
                ErrorCode.NOT_PERMITTED,
                f"this agent does not offer {session.kind[:32]!r} sessions",
            )
            self.sessions.pop(session.channel, None)
            await self._send()
            return
        decision = await self.consent.decide(request)
        if session.closed or conn is not self._conn:
            return  # the technician gave up (or the relay went away) while we asked
        conn.send_channel_message(
            session.channel,
            ConsentDecision(granted=decision.granted, how=decision.how, by=decision.by),
        )
        if not decision.granted:
            conn.reject_channel(
                session.channel, ErrorCode.CONSENT_DENIED, _denial_text(decision.how)
            )
            self.sessions.pop(session.channel, None)
            await self._send()
            log.info("session %s denied (%s)", session.id, decision.how)
            return
        if session.update is not None:
            try:
                session.update.open_spool()
            except OSError as exc:
                log.warning("update %s: no temporary directory: %s", session.id, exc)
                conn.reject_channel(
                    session.channel, ErrorCode.INTERNAL, "the agent cannot store the package"
                )
                self.sessions.pop(session.channel, None)
                await self._send()
                return
            conn.accept_channel(session.channel)
            await self._send()
            log.info("update session %s started for %s", session.id, session.technician)
            session.notice = await self.consent.notice(request)
            if session.notice is not None:
                session.spawn(self._watch_notice(session, session.notice))
            return
        if session.kind == SessionKind.FILES:
            session.files = FileService(
                self.roots, conn, session.channel, self._send, self._shell_open
            )
            conn.accept_channel(session.channel)
            await self._send()
            log.info("files session %s started for %s", session.id, session.technician)
            session.notice = await self.consent.notice(request)
            if session.notice is not None:
                session.spawn(self._watch_notice(session, session.notice))
            return
        if session.kind in (SessionKind.VIEW, SessionKind.CONTROL):
            await self._start_screen(session, conn, params, request)
            return
        try:
            session.shell = await self._start_shell(params)
        except OSError as exc:
            log.warning("could not start the shell: %s", exc)
            conn.reject_channel(session.channel, ErrorCode.INTERNAL, "the shell could not start")
            self.sessions.pop(session.channel, None)
            await self._send()
            return
        conn.accept_channel(session.channel)
        await self._send()
        log.info("session %s started for %s", session.id, session.technician)
        session.notice = await self.consent.notice(request)
        if session.notice is not None:
            session.spawn(self._watch_notice(session, session.notice))
        await self._pump_output(session, conn)

    async def _start_screen(
        self,
        session: HostedSession,
        conn: Connection,
        params: dict[str, str],
        request: ConsentRequest,
    ) -> None:
        async def ask_control(reason: str) -> bool:
            upgrade = dataclasses.replace(
                request, kind=SessionKind.CONTROL.value, reason=reason or request.reason
            )
            decision = await self.consent.decide(upgrade)
            if session.closed or conn is not self._conn:
                return False
            conn.send_channel_message(
                session.channel,
                ConsentDecision(granted=decision.granted, how=decision.how, by=decision.by),
            )
            await self._send()
            log.info(
                "session %s: control %s", session.id, "granted" if decision.granted else "denied"
            )
            return decision.granted

        try:
            screen = ScreenStreamer(
                conn,
                session.channel,
                self._send,
                control=session.kind == SessionKind.CONTROL,
                ask_control=ask_control,
                monitor=_int(params, "monitor", 0) if params.get("monitor", "0") != "0" else 0,
                mode=parse_mode(params.get("mode", "auto")),
            )
            await screen.start()
        except CaptureError as exc:
            log.warning("cannot show the screen: %s", exc)
            conn.reject_channel(session.channel, ErrorCode.INTERNAL, "there is no screen to show")
            self.sessions.pop(session.channel, None)
            await self._send()
            return
        session.screen = screen
        conn.accept_channel(session.channel)
        await self._send()
        log.info("%s session %s started for %s", session.kind, session.id, session.technician)
        session.notice = await self.consent.notice(request)
        if session.notice is not None:
            session.spawn(self._watch_notice(session, session.notice))
        await screen.run()

    async def _start_shell(self, params: dict[str, str]) -> ShellProcess:
        shell = self.config.shell or login_shell()
        command = params.get("command", "")
        argv = [shell, "-c", command] if command else [shell, "-l"]
        use_pty = params.get("pty", "1") != "0"
        env = session_environment(params.get("term", "xterm-256color")[:64], shell)
        return await ShellProcess.start(
            argv,
            env=env,
            cwd=working_directory(env["HOME"]),
            cols=_int(params, "cols", 80),
            rows=_int(params, "rows", 24),
            use_pty=use_pty,
        )

    async def _pump_output(self, session: HostedSession, conn: Connection) -> None:
        shell = session.shell
        assert shell is not None
        while not session.closed:
            data = await shell.read()
            if not data:
                break
            while data and not session.closed:
                try:
                    credit = conn.send_credit(session.channel)
                except UsageError:
                    return  # the channel is closing
                if credit <= 0:
                    session.credit.clear()
                    await session.credit.wait()
                    continue
                conn.send_data(session.channel, data[:credit])
                data = data[credit:]
                await self._send()
        if session.closed:
            return
        code, signal_name = await shell.wait()
        conn.send_channel_message(session.channel, ExitStatus(code=code, signal=signal_name))
        conn.close_channel(session.channel, EndCode.NORMAL, f"exited with status {code}")
        await self._send()
        log.info("session %s: shell exited (%d)", session.id, code)
        await self._teardown(session, cancel_pump=False)

    async def _watch_notice(self, session: HostedSession, notice: Notice) -> None:
        await notice.ended_by_customer()
        if not session.closed:
            await self.end_by_customer(session.id)

    # -- ending ------------------------------------------------------------------------------

    async def end_by_customer(self, session_id: str) -> bool:
        for session in list(self.sessions.values()):
            if session.id == session_id and self._conn is not None:
                self._conn.close_channel(session.channel, EndCode.CUSTOMER, "ended by the customer")
                await self._send()
                session.closed = True
                await self._teardown(session)
                log.info("session %s ended by the customer", session.id)
                return True
        return False

    async def _teardown(self, session: HostedSession, *, cancel_pump: bool = True) -> None:
        session.closed = True
        session.credit.set()
        self.sessions.pop(session.channel, None)
        if session.shell is not None:
            await session.shell.terminate()
        if session.files is not None:
            await session.files.close()
        if session.screen is not None:
            await session.screen.close()
        if session.update is not None:
            await session.update.close()
        if session.notice is not None:
            await session.notice.close()
        current = asyncio.current_task()
        for task in list(session.tasks):
            if task is not current and (cancel_pump or not task.done()):
                task.cancel()

    async def connection_lost(self) -> None:
        """The relay is gone: every session ends (the relay audits them as agent lost)."""
        for session in list(self.sessions.values()):
            await self._teardown(session)
        self._conn = None
        self._flush = None

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values()]


def _denial_text(how: str) -> str:
    return {
        "timeout": "the customer did not answer in time",
        "no-user": "nobody is at the device to approve the session",
    }.get(how, "the customer denied the session")
