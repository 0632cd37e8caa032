"""The audit hash chain: what verifies, and that every kind of tampering is named."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.auditchain import GENESIS, canonical_bytes, entry_hash, verify_chain


def make_chain(count: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in range(1, count + 1):
        fields = {
            "seq": seq,
            "ts": f"2026-01-01T00:00:{seq:02d}",
            "actor": "admin",
            "action": "user.create",
            "target": f"user{seq}",
            "details": {"role": "é"},
        }
        digest = entry_hash(
            seq, fields["ts"], "admin", "user.create", f"user{seq}", {"role": "é"}, prev
        )
        entries.append({**fields, "prev": prev, "hash": digest})
        prev = digest
    return entries


def test_canonical_bytes_are_stable_and_key_order_free() -> None:
    first = canonical_bytes(1, "t", "a", "x", "y", {"b": 1, "a": [1, 2]}, GENESIS)
    second = canonical_bytes(1, "t", "a", "x", "y", {"a": [1, 2], "b": 1}, GENESIS)
    assert first == second
    assert b" " not in first
    assert "é".encode() in canonical_bytes(1, "t", "é", "x", "y", {}, GENESIS)


def test_intact_chain_verifies_with_and_without_head() -> None:
    chain = make_chain(5)
    assert verify_chain(chain).ok
    report = verify_chain(chain, head=(5, chain[-1]["hash"]))
    assert report.ok and report.checked == 5
    assert verify_chain([]).ok


@pytest.mark.parametrize("field", ["actor", "action", "target", "ts"])
def test_edited_field_is_named(field: str) -> None:
    chain = make_chain(5)
    chain[2] = {**chain[2], field: "forged"}
    report = verify_chain(chain)
    assert not report.ok and report.bad_seq == 3 and "altered" in report.reason


def test_edited_details_is_named() -> None:
    chain = make_chain(3)
    chain[1] = {**chain[1], "details": {"role": "admin"}}
    assert verify_chain(chain).bad_seq == 2


def test_deleted_entry_is_named() -> None:
    chain = make_chain(5)
    del chain[1]
    report = verify_chain(chain)
    assert not report.ok and report.bad_seq == 2 and "missing" in report.reason


def test_rehashed_forgery_breaks_the_next_link() -> None:
    chain = make_chain(4)
    forged = {**chain[1], "target": "mallory"}
    forged["hash"] = entry_hash(
        2,
        forged["ts"],
        forged["actor"],
        forged["action"],
        "mallory",
        forged["details"],
        forged["prev"],
    )
    chain[1] = forged
    report = verify_chain(chain)
    assert report.bad_seq == 3 and "does not link" in report.reason


def test_truncation_is_caught_by_the_head() -> None:
    chain = make_chain(5)
    report = verify_chain(chain[:3], head=(5, chain[-1]["hash"]))
    assert not report.ok and report.bad_seq == 4 and "missing" in report.reason


def test_head_mismatch_is_reported() -> None:
    chain = make_chain(3)
    report = verify_chain(chain, head=(3, "f" * 64))
    assert not report.ok and report.bad_seq == 3


def test_chain_longer_than_head_still_verifies() -> None:
    chain = make_chain(4)
    assert verify_chain(chain, head=(2, chain[1]["hash"])).ok


def test_truncated_then_continued_chain_is_caught_by_the_head() -> None:
    original = make_chain(5)
    head = (5, original[-1]["hash"])
    # Entries 4 and 5 deleted, then new entries appended after 3: numbers reused.
    forged = make_chain(3)
    prev = forged[-1]["hash"]
    for seq in (4, 5, 6):
        stamp = f"2027-01-01T00:00:{seq:02d}"
        digest = entry_hash(seq, stamp, "x", "y", "z", {}, prev)
        forged.append(
            {
                "seq": seq,
                "ts": stamp,
                "actor": "x",
                "action": "y",
                "target": "z",
                "details": {},
                "prev": prev,
                "hash": digest,
            }
        )
        prev = digest
    report = verify_chain(forged, head=head)
    assert not report.ok
    assert report.bad_seq == 5
