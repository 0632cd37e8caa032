"""The CLI as a witness of each relay's audit chain: what it last verified, kept outside
the relay.

Whoever can write a relay's data directory can rewrite the whole audit chain, its head
file included, and the relay then vouches for the new chain. ``helpline audit verify``
therefore remembers, per relay (keyed by the fingerprint of the relay's CA, which the CLI
pinned at login), the sequence number and hash of the last entry it verified, in
``audit-witness.json`` (0600) in the CLI's config directory. A later chain must extend it:
it reaches that sequence number and has the same hash there. A rewrite that happened
after the witness's last check is detected; one before it cannot be.

Exported copies (``helpline audit export``) are JSON lines: a first line naming the relay
and its head, then the entries in order; :func:`verify_export` checks one on its own.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from protocol.auditchain import GENESIS, ChainReport, entry_hash

from .credentials import config_dir

__all__ = [
    "EXPORT_FORMAT",
    "Witnessed",
    "check_extends",
    "export_header",
    "load_witnessed",
    "save_witnessed",
    "verify_export",
    "witness_path",
]

EXPORT_FORMAT = "helpline-audit-export"


@dataclass(frozen=True, slots=True)
class Witnessed:
    """The head this CLI verified last for one relay."""

    url: str
    ca_fingerprint: str
    seq: int
    hash: str
    verified_at: float


def witness_path() -> Path:
    return config_dir() / "audit-witness.json"


def _load_all() -> dict[str, Any]:
    try:
        data = json.loads(witness_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as error:
        # A witness that cannot be read must not silently start over.
        raise ValueError(f"{witness_path()} is not valid JSON ({error}); move it away") from None
    relays = data.get("relays") if isinstance(data, dict) else None
    return relays if isinstance(relays, dict) else {}


def load_witnessed(ca_fingerprint: str) -> Witnessed | None:
    record = _load_all().get(ca_fingerprint)
    if not isinstance(record, dict):
        return None
    try:
        return Witnessed(
            url=str(record["url"]),
            ca_fingerprint=ca_fingerprint,
            seq=int(record["seq"]),
            hash=str(record["hash"]),
            verified_at=float(record["verified_at"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def save_witnessed(witnessed: Witnessed) -> Path:
    """Record ``witnessed`` for its relay (0600, written whole then renamed)."""
    relays = _load_all()
    relays[witnessed.ca_fingerprint] = asdict(witnessed)
    path = witness_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump({"relays": relays}, handle, indent=1, sort_keys=True)
    os.replace(temporary, path)
    return path


def check_extends(entries: Sequence[Mapping[str, Any]], witnessed: Witnessed) -> str | None:
    """Why ``entries`` (a chain already verified from seq 1) does not extend ``witnessed``,
    or None when it does."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(witnessed.verified_at))
    last = int(entries[-1]["seq"]) if entries else 0
    if last < witnessed.seq:
        return (
            f"the chain now ends at entry {last}, but entry {witnessed.seq} was verified"
            f" on {when}: the sequence went back"
        )
    entry = entries[witnessed.seq - 1] if witnessed.seq > 0 else None
    if entry is not None and not hmac.compare_digest(str(entry["hash"]), witnessed.hash):
        return (
            f"entry {witnessed.seq} has hash {str(entry['hash'])[:16]}…, but it had"
            f" {witnessed.hash[:16]}… when verified on {when}"
        )
    return None


def export_header(url: str, ca_fingerprint: str, head: tuple[int, str] | None, first: int) -> str:
    return json.dumps(
        {
            "format": EXPORT_FORMAT,
            "version": 1,
            "relay": url,
            "ca_fingerprint": ca_fingerprint,
            "from": first,
            "head": None if head is None else {"seq": head[0], "hash": head[1]},
            "exported_at": time.time(),
        },
        sort_keys=True,
    )


def verify_export(lines: Iterable[str]) -> tuple[dict[str, Any], ChainReport]:
    """An exported copy checked on its own: each entry's hash recomputed, each linked to
    the one before (the first to the genesis when the copy starts at entry 1), none
    missing, and the last one the head named on the first line."""
    iterator = iter(lines)
    try:
        header = json.loads(next(iterator))
    except (StopIteration, ValueError):
        raise ValueError("not a Helpline audit export (no header line)") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ValueError("not a Helpline audit export")
    head = header.get("head")
    head_seq = int(head["seq"]) if isinstance(head, dict) else None
    checked = 0
    prev: str | None = None
    expected = int(header.get("from") or 1)
    last_seq, hash_at_head = expected - 1, None
    for number, line in enumerate(iterator, start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            seq = int(entry["seq"])
            fields = (entry["ts"], entry["actor"], entry["action"], entry["target"])
            details, claimed_prev, claimed = entry["details"], entry["prev"], entry["hash"]
        except (ValueError, KeyError, TypeError):
            return header, ChainReport(False, checked, None, f"line {number} is not an entry")
        if seq != expected:
            return header, ChainReport(False, checked, expected, f"entry {expected} is missing")
        anchor = GENESIS if seq == 1 else (prev if prev is not None else str(claimed_prev))
        if not hmac.compare_digest(str(claimed_prev), anchor):
            return header, ChainReport(
                False, checked, seq, f"entry {seq} does not link to entry {seq - 1}"
            )
        recomputed = entry_hash(seq, *fields, details, anchor)
        if not hmac.compare_digest(recomputed, str(claimed)):
            return header, ChainReport(False, checked, seq, f"entry {seq} was altered")
        prev, last_seq = recomputed, seq
        if seq == head_seq:
            hash_at_head = recomputed
        expected += 1
        checked += 1
    if isinstance(head, dict) and head_seq is not None:
        if last_seq < head_seq:
            return header, ChainReport(
                False,
                checked,
                last_seq + 1,
                f"entries after {last_seq} are missing (head is {head_seq})",
            )
        if hash_at_head is not None and not hmac.compare_digest(hash_at_head, str(head["hash"])):
            return header, ChainReport(
                False, checked, head_seq, f"entry {head_seq} differs from the head"
            )
    return header, ChainReport(True, checked)
