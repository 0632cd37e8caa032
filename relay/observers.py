"""What the relay keeps of a session while it bridges it: one observer per session kind.

The broker hands every byte and message that crosses a session to its
observer. A shell's observer records an asciicast; a files session's observer
audits each transfer (see :mod:`relay.filetransfers`). When the session ends,
the observer's :meth:`SessionObserver.close` returns what goes into the
session-end audit entry (a recording's path and SHA-256, for instance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocol import Message

from .recorder import AsciicastRecorder


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

    async def close(self) -> dict[str, Any]:
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
