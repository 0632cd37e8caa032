"""What the relay does for screen (``view``/``control``) sessions beyond bridging them.

* :class:`ScreenGuard`: whether the technician may send input. A ``control``
  session may from the start; a ``view`` session only after the technician
  asked for control (:class:`~protocol.screen.ControlRequest`) and the agent
  reported the customer's new consent. Input otherwise is not forwarded: the
  technician gets a :class:`~protocol.screen.ScreenRefused` and the attempt is
  audited (the first one in full, the rest counted in the session-end entry).
  It also checks the tile stream the agent sends (untrusted) with a
  :class:`~protocol.screen.TileStreamParser` that keeps no tile bytes.
* :class:`ScreenRecording`: the session recorded in the format of
  :mod:`protocol.screenrec` (``recordings/ID.screen``), flushed event by event,
  its SHA-256 sealed into the session-end audit entry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from protocol import Message
from protocol.screen import (
    ControlRequest,
    ScreenAck,
    TileStreamParser,
    input_message_types,
)
from protocol.screenrec import EventKind, encode_event, encode_header
from protocol.sessions import ConsentDecision, SessionKind

from .observers import SessionObserver
from .recorder import file_sha256

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
