"""What the relay does for screen (``view``/``control``) sessions beyond bridging them.

* :class:`ScreenGuard`: whether the technician may send input. A ``control``
  session may from the start; a ``view`` session only after the technician
  asked for control (:class:`~protocol.screen.ControlRequest`) and the agent
  reported the customer's new consent. Input otherwise is not forwarded: the
  technician gets a :class:`~protocol.screen.ScreenRefused` and the attempt is
  audited (the first one in full, the rest counted in the session-end entry).
  It also checks the tile stream the agent sends (untrusted) with a
  :class:`~protocol.screen.TileStreamParser` that keeps no tile bytes.
  :func:`screen_input_allowed` and :func:`screen_stream_ok` are the broker's hooks.
* :class:`ScreenRecording`: the session recorded in the format of
  :mod:`protocol.screenrec` (``recordings/ID.screen``), flushed event by event,
  its SHA-256 sealed into the session-end audit entry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import Message
from protocol.errors import ErrorCode, ProtocolError
from protocol.screen import (
    ControlRequest,
    PointerAction,
    PointerInput,
    ScreenAck,
    ScreenRefused,
    TileStreamParser,
    input_message_types,
)
from protocol.screenrec import EventKind, encode_event, encode_header
from protocol.sessions import ConsentDecision, SessionKind

from .observers import SessionObserver
from .recorder import file_sha256

if TYPE_CHECKING:
    from .broker import Broker, Session

SCREEN_KINDS = frozenset({SessionKind.VIEW, SessionKind.CONTROL})
RECORDING_SUFFIX = ".screen"


class ScreenGuard:
    def __init__(self, kind: str) -> None:
        self.controlling = kind == SessionKind.CONTROL
        self.upgrade_requested = False
        self.refused_inputs = 0
        self.stream = TileStreamParser(keep_payloads=False)

    def check_stream(self, data: bytes) -> None:
        """Raises a ProtocolError when the agent's tile stream breaks the format."""
        self.stream.feed(data)

    def allows(self, message: Message) -> bool:
        """Whether ``message`` from the technician may reach the device."""
        if isinstance(message, ControlRequest):
            self.upgrade_requested = True
            return True
        if isinstance(message, input_message_types()) and not self.controlling:
            self.refused_inputs += 1
            return False
        return True

    def consent(self, decision: ConsentDecision) -> bool:
        """The agent reported a consent decision; True when it granted an upgrade."""
        if not self.upgrade_requested or self.controlling:
            return False
        self.upgrade_requested = False
        self.controlling = decision.granted
        return decision.granted


async def screen_input_allowed(broker: Broker, session: Session, message: Message) -> bool:
    """Whether a technician's ``message`` may go on to the device; refused input is
    answered (ScreenRefused) and audited here."""
    guard = session.screen
    assert guard is not None
    if guard.allows(message):
        if isinstance(message, ControlRequest):
            await broker.relay.audit.record(
                session.user.username,
                "session.control.request",
                session.device.name,
                session=session.id,
            )
        return True
    if guard.refused_inputs == 1:
        await broker.relay.audit.record(
            session.user.username,
            "session.input.refused",
            session.device.name,
            session=session.id,
            input=message.TYPE,
            reason="view session: the customer allowed viewing only",
        )
    if isinstance(message, PointerInput) and message.action == PointerAction.MOVE:
        return False  # counted, but a stream of moves is not answered move by move
    refusal = ScreenRefused(
        code=ErrorCode.NOT_PERMITTED,
        message="input refused: the customer allowed viewing only (ask for control)",
    )
    session.to_tech.put("message", refusal)
    await broker._drain_to_tech(session)
    return False


async def screen_stream_ok(broker: Broker, session: Session, data: bytes) -> bool:
    """Whether the device's ``data`` keeps to the tile-stream format; if not, the session
    ends (both legs) with the parser's reason, and that is audited."""
    assert session.screen is not None
    try:
        session.screen.check_stream(data)
    except ProtocolError as error:
        message = f"the device sent a malformed screen stream: {error.message}"[:1024]
        await broker.relay.audit.record(
            session.device.name,
            "session.stream.refused",
            session.device.name,
            session=session.id,
            reason=error.message[:512],
        )
        await broker._end_both(session, error.code, "malformed stream", message)
        return False
    return True


class ScreenRecording(SessionObserver):
    """Writes a screen session's stream and messages to ``path``, as they cross."""

    def __init__(
        self,
        path: Path,
        data_dir: Path,
        *,
        session_id: str,
        technician: str,
        device: str,
        kind: str,
        clock: Any = time.monotonic,
    ) -> None:
        self.path = path
        self.data_dir = data_dir
        self._clock = clock
        self._start = clock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._write(
            encode_header(
                timestamp=int(time.time()),
                session=session_id,
                technician=technician,
                device=device,
                kind=kind,
            )
        )

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _event(self, kind: EventKind, data: bytes) -> None:
        self._write(encode_event(round(self._clock() - self._start, 6), kind, data))

    def device_data(self, data: bytes) -> None:
        self._event(EventKind.OUTPUT, data)

    async def device_message(self, message: Message) -> None:
        self._event(EventKind.DEVICE_MESSAGE, message.encode())

    async def tech_message(self, message: Message) -> None:
        if not isinstance(message, ScreenAck):  # acknowledgements say nothing about the screen
            self._event(EventKind.TECHNICIAN_MESSAGE, message.encode())

    async def close(self) -> dict[str, Any]:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return {
            "recording": str(self.path.relative_to(self.data_dir)),
            "recording_sha256": file_sha256(self.path),
        }
