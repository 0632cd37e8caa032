"""After a crash: sessions the store still shows open are ended and their recordings sealed."""

from __future__ import annotations

import time
from typing import Any

from protocol.sessions import SessionState

from .recorder import file_sha256
from .state import RelayState


async def seal_interrupted_sessions(relay: RelayState) -> int:
    """After a crash: end sessions the store still shows open, sealing what was recorded."""
    count = 0
    for record in await relay.store.list_sessions(limit=10_000, unfinished=True):
        sha256 = None
        if record.recording is None:
            candidates = [
                relay.config.data_dir / "recordings" / f"{record.id}{suffix}"
                for suffix in (".cast", ".screen")
            ]
            path = next((p for p in candidates if p.exists()), candidates[0])
            recording = str(path.relative_to(relay.config.data_dir)) if path.exists() else None
        else:
            recording = record.recording
            path = relay.config.data_dir / recording
        if recording is not None and path.exists():
            sha256 = file_sha256(path)
        else:
            recording = None
        now = time.time()
        await relay.store.update_session(
            record.id,
            state=SessionState.ENDED,
            end_reason="relay restarted",
            ended_at=now,
            recording=recording,
            recording_sha256=sha256,
        )
        details: dict[str, Any] = {
            "session": record.id,
            "reason": "relay restarted",
            "state": SessionState.ENDED.value,
            "technician": record.username,
        }
        if recording is not None:
            details["recording"] = recording
            details["recording_sha256"] = sha256
        await relay.audit.record(record.username, "session.end", record.device_name, **details)
        count += 1
    return count
