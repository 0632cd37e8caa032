"""The audit log's hash chain: canonical encoding, entry hashes, verification.

Pure functions, shared by the relay (which appends) and the console (which
verifies what the relay serves, so ``helpline audit verify`` does not take the
relay's word for it). Each entry's hash is SHA-256 over the canonical JSON of
``[seq, ts, actor, action, target, details, prev]``: keys sorted, no spaces,
UTF-8. ``prev`` is the previous entry's hash (``GENESIS`` for the first), so
editing any entry, or deleting one, breaks every link after it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GENESIS", "ChainReport", "canonical_bytes", "entry_hash", "verify_chain"]

GENESIS = "0" * 64


def canonical_bytes(
    seq: int, ts: str, actor: str, action: str, target: str, details: Mapping[str, Any], prev: str
) -> bytes:
    """The exact bytes an entry's hash covers."""
    return json.dumps(
        [seq, ts, actor, action, target, details, prev],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def entry_hash(
    seq: int, ts: str, actor: str, action: str, target: str, details: Mapping[str, Any], prev: str
) -> str:
    return hashlib.sha256(
        canonical_bytes(seq, ts, actor, action, target, details, prev)
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of :func:`verify_chain`. ``bad_seq`` names the first entry that fails."""

    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str = ""


def verify_chain(
    entries: Iterable[Mapping[str, Any]], *, head: tuple[int, str] | None = None
) -> ChainReport:
    """Check ``entries`` (dicts with seq, ts, actor, action, target, details, prev, hash).

    Entries must start at seq 1 and follow each other without gaps. ``head``,
    when given, is the (seq, hash) the relay recorded for its latest entry
    outside the database: a chain that stops short of it was truncated.
    """
    expected_seq = 1
    prev = GENESIS
    checked = 0
    hash_at_head: str | None = None
    for entry in entries:
        seq = entry["seq"]
        if seq != expected_seq:
            return ChainReport(False, checked, expected_seq, f"entry {expected_seq} is missing")
        if not hmac.compare_digest(str(entry["prev"]), prev):
            return ChainReport(False, checked, seq, f"entry {seq} does not link to entry {seq - 1}")
        recomputed = entry_hash(
            seq,
            entry["ts"],
            entry["actor"],
            entry["action"],
            entry["target"],
            entry["details"],
            prev,
        )
        if not hmac.compare_digest(recomputed, str(entry["hash"])):
            return ChainReport(False, checked, seq, f"entry {seq} was altered")
        prev = recomputed
        if head is not None and seq == head[0]:
            hash_at_head = recomputed
        expected_seq += 1
        checked += 1
    if head is not None:
        head_seq, head_hash = head
        if checked < head_seq:
            return ChainReport(
                False,
                checked,
                checked + 1,
                f"entries after {checked} are missing (head is {head_seq})",
            )
        # A chain truncated and then continued reuses sequence numbers: the entry at the
        # head's position no longer has the hash recorded for it.
        if hash_at_head is not None and not hmac.compare_digest(hash_at_head, head_hash):
            return ChainReport(
                False, checked, head_seq, f"entry {head_seq} differs from the recorded head"
            )
    return ChainReport(True, checked)
