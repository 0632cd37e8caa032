"""The relay's side of the audit log: recording entries and keeping the chain's head.

Entries go to the store, which chains each to the previous one atomically
(see :mod:`protocol.auditchain`). After each append the newest ``(seq, hash)``
is also written to ``DATA/audit-head.json``, outside the database, so a chain
whose last entries were deleted no longer matches its recorded head.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocol.auditchain import ChainReport, verify_chain

from .models import AuditEntry
from .store import Store

log = logging.getLogger("helpline.audit")

_MAX_TEXT = 512


def _clip(value: Any) -> Any:
    """Bound what untrusted callers put in an entry (agent hostnames, usernames...)."""
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    if isinstance(value, dict):
        return {str(k)[:64]: _clip(v) for k, v in list(value.items())[:64]}
    if isinstance(value, list | tuple):
        return [_clip(v) for v in list(value)[:64]]
    return value


class AuditLog:
    def __init__(self, store: Store, head_path: Path) -> None:
        self.store = store
        self.head_path = head_path

    async def record(self, actor: str, action: str, target: str = "", **details: Any) -> AuditEntry:
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        entry = await self.store.append_audit(
            ts, _clip(actor), action, _clip(target), _clip(details)
        )
        head = self.head()
        if head is None or (entry.prev == head[1] and entry.seq == head[0] + 1):
            self._write_head(entry)
        else:
            # The chain no longer continues from the recorded head (rows were deleted):
            # keep the head where it was, so verification keeps reporting the break.
            log.error(
                "audit entry %d does not continue the recorded head %d; head left in place",
                entry.seq,
                head[0],
            )
        log.info("audit %s actor=%s target=%s seq=%d", action, entry.actor, entry.target, entry.seq)
        return entry

    def _write_head(self, entry: AuditEntry) -> None:
        temporary = self.head_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"seq": entry.seq, "hash": entry.hash}))
        os.replace(temporary, self.head_path)

    def head(self) -> tuple[int, str] | None:
        try:
            data = json.loads(self.head_path.read_text())
            return int(data["seq"]), str(data["hash"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    async def verify(self) -> ChainReport:
        """Check the whole chain in pages, against the recorded head."""
        entries: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await self.store.list_audit(after=after, limit=5000)
            if not page:
                break
            entries.extend(e.public() for e in page)
            after = page[-1].seq
        return verify_chain(entries, head=self.head())
