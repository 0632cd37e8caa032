"""Auditing a files session: every transfer and change the relay sees pass.

The relay forwards a files channel without understanding more than it needs
to audit it: which file went which way, its size and SHA-256, and how it
ended. For whole transfers (not resumed) the relay hashes the bytes itself, so
the audit entry does not rest on the device's word alone. With ``[recording]
keep_files = true`` each whole transfer is also copied beside the session's
recordings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from protocol import Message
from protocol.files import FileDone, FileOp, FileReply, FileRequest

from .audit import AuditLog
from .observers import SessionObserver

_CHANGES = {FileOp.MKDIR: "file.mkdir", FileOp.REMOVE: "file.remove", FileOp.RENAME: "file.rename"}


@dataclass(eq=False)
class Transfer:
    id: int
    direction: str  # "to device" | "from device"
    path: str
    size: int = 0
    offset: int = 0
    started: bool = False
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    copy: BinaryIO | None = None
    copy_path: Path | None = None
    sha256: str = ""


class FileTransferAudit(SessionObserver):
    def __init__(
        self,
        audit: AuditLog,
        *,
        actor: str,
        device: str,
        session_id: str,
        copies: Path | None = None,
    ) -> None:
        self.audit = audit
        self.actor = actor
        self.device = device
        self.session_id = session_id
        self.copies = copies
        self._requests: dict[int, FileRequest] = {}
        self._pushes: dict[int, FileRequest] = {}
        self._current: Transfer | None = None
        self._count = 0

    async def _record(self, action: str, path: str, **details: Any) -> None:
        await self.audit.record(
            self.actor, action, self.device, session=self.session_id, path=path, **details
        )

    def _open_copy(self, transfer: Transfer) -> None:
        if self.copies is None or transfer.offset:
            return
        self._count += 1
        self.copies.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = os.path.basename(transfer.path.rstrip("/")) or "file"
        transfer.copy_path = self.copies / f"{self._count:04d}-{name[:100]}"
        fd = os.open(
            transfer.copy_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
        )
        transfer.copy = os.fdopen(fd, "wb")

    def _take(self, transfer: Transfer, data: bytes) -> None:
        transfer.received += len(data)
        transfer.digest.update(data)
        if transfer.copy is not None:
            transfer.copy.write(data)

    async def _finish(self, transfer: Transfer, outcome: str, **details: Any) -> None:
        if transfer.copy is not None:
            transfer.copy.close()
        if self._current is transfer:
            self._current = None
        whole = transfer.offset == 0
        relay_sha256 = transfer.digest.hexdigest() if whole else None
        extra: dict[str, Any] = {
            "direction": transfer.direction,
            "size": transfer.size,
            "sha256": transfer.sha256,
            "outcome": outcome,
            "resumed_from": transfer.offset,
            "bytes_this_session": transfer.received,
        }
        if relay_sha256 is not None and outcome == "completed":
            extra["relay_verified"] = relay_sha256 == transfer.sha256
        if transfer.copy_path is not None:
            extra["copy"] = transfer.copy_path.name
        await self._record("file.transfer", transfer.path, **extra, **details)

    # -- what passes -------------------------------------------------------------------------

    def device_data(self, data: bytes) -> None:
        if self._current is not None and self._current.direction == "from device":
            self._take(self._current, data)

    def tech_data(self, data: bytes) -> None:
        if self._current is not None and self._current.direction == "to device":
            self._take(self._current, data)

    async def tech_message(self, message: Message) -> None:
        if isinstance(message, FileRequest):
            self._requests[message.id] = message
            if message.op == FileOp.PUSH:
                self._pushes[message.id] = message
            elif message.op == FileOp.WRITE:
                push = self._pushes.get(message.id)
                transfer = Transfer(
                    message.id,
                    "to device",
                    message.path,
                    size=push.size if push else 0,
                    offset=message.offset,
                )
                if self._current is not None:
                    await self._finish(self._current, "interrupted")
                self._current = transfer
                self._open_copy(transfer)
        elif isinstance(message, FileDone):
            current = self._current
            if (
                current is not None
                and current.id == message.id
                and current.direction == "to device"
            ):
                current.sha256 = message.sha256
                current.size = message.size

    async def device_message(self, message: Message) -> None:
        if isinstance(message, FileReply):
            request = self._requests.get(message.id)
            if request is None:
                return
            if request.op == FileOp.PULL:
                if not message.ok:
                    await self._record(
                        "file.transfer",
                        request.path,
                        direction="from device",
                        outcome="failed",
                        error=message.message,
                    )
                    return
                transfer = Transfer(
                    message.id,
                    "from device",
                    request.path,
                    size=message.size,
                    offset=message.offset,
                )
                if self._current is not None:
                    await self._finish(self._current, "interrupted")
                self._current = transfer
                self._open_copy(transfer)
            elif request.op == FileOp.WRITE:
                current = self._current
                if current is not None and current.id == message.id:
                    if message.ok:
                        current.sha256 = message.sha256 or current.sha256
                        await self._finish(current, "completed")
                    else:
                        await self._finish(current, "failed", error=message.message)
            elif request.op == FileOp.PUSH and not message.ok:
                await self._record(
                    "file.transfer",
                    request.path,
                    direction="to device",
                    outcome="failed",
                    error=message.message,
                )
            elif request.op in _CHANGES:
                details: dict[str, Any] = {"outcome": "done" if message.ok else "failed"}
                if request.op == FileOp.RENAME:
                    # not "target": that is the audit entry's own field (the device)
                    details["new_path"] = request.target
                if not message.ok:
                    details["error"] = message.message
                await self._record(_CHANGES[FileOp(request.op)], request.path, **details)
        elif isinstance(message, FileDone):
            current = self._current
            if (
                current is not None
                and current.id == message.id
                and current.direction == "from device"
            ):
                current.sha256 = message.sha256
                current.size = message.size
                # Completed only once the technician has it all: see delivered().

    async def delivered(self, message: Message) -> None:
        current = self._current
        if (
            isinstance(message, FileDone)
            and current is not None
            and current.id == message.id
            and current.direction == "from device"
        ):
            await self._finish(current, "completed")

    async def close(self) -> dict[str, Any]:
        if self._current is not None:
            await self._finish(self._current, "interrupted")
        return {}
