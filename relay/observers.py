"""What the relay keeps of a session while it bridges it: one observer per session kind.

The broker hands every byte and message that crosses a session to its
observer. A shell's observer records an asciicast; a files session's observer
audits each transfer (see :mod:`relay.filetransfers`). When the session ends,
the observer's :meth:`SessionObserver.close` returns what goes into the
session-end audit entry (a recording's path and SHA-256, for instance).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from protocol import Message

from .recorder import AsciicastRecorder

log = logging.getLogger("helpline.sessions")


class SessionObserver:
    """Default: observe nothing."""

    def device_data(self, data: bytes) -> None:
        return None

    def tech_data(self, data: bytes) -> None:
        return None

    def resize(self, cols: int, rows: int) -> None:
        return None

    async def device_message(self, message: Message) -> None:
        return None

    async def tech_message(self, message: Message) -> None:
        return None

    async def delivered(self, message: Message) -> None:
        """``message`` from the device reached the technician (after the data before it)."""
        return None

    async def close(self) -> dict[str, Any]:
        return {}


class GuardedObserver(SessionObserver):
    """Wraps an observer so that its failure costs a log line, never the session or the
    agent's connection (every other session on that device shares it)."""

    def __init__(self, inner: SessionObserver) -> None:
        self.inner = inner

    def _failed(self, what: str) -> None:
        log.exception("session observer failed in %s; the session goes on", what)

    def device_data(self, data: bytes) -> None:
        try:
            self.inner.device_data(data)
        except Exception:
            self._failed("device_data")

    def tech_data(self, data: bytes) -> None:
        try:
            self.inner.tech_data(data)
        except Exception:
            self._failed("tech_data")

    def resize(self, cols: int, rows: int) -> None:
        try:
            self.inner.resize(cols, rows)
        except Exception:
            self._failed("resize")

    async def device_message(self, message: Message) -> None:
        try:
            await self.inner.device_message(message)
        except Exception:
            self._failed("device_message")

    async def tech_message(self, message: Message) -> None:
        try:
            await self.inner.tech_message(message)
        except Exception:
            self._failed("tech_message")

    async def delivered(self, message: Message) -> None:
        try:
            await self.inner.delivered(message)
        except Exception:
            self._failed("delivered")

    async def close(self) -> dict[str, Any]:
        try:
            return await self.inner.close()
        except Exception:
            self._failed("close")
            return {}


class ShellRecording(SessionObserver):
    """Records a shell session as asciicast v2 under the data directory."""

    def __init__(self, recorder: AsciicastRecorder, data_dir: Path) -> None:
        self.recorder = recorder
        self.data_dir = data_dir

    def device_data(self, data: bytes) -> None:
        self.recorder.output(data)

    def tech_data(self, data: bytes) -> None:
        self.recorder.input(data)

    def resize(self, cols: int, rows: int) -> None:
        self.recorder.resize(cols, rows)

    async def close(self) -> dict[str, Any]:
        sha256 = self.recorder.close()
        return {
            "recording": str(self.recorder.path.relative_to(self.data_dir)),
            "recording_sha256": sha256,
        }
