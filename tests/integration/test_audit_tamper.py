"""Tampering with the audit log on disk, as someone holding the relay's data directory
would: the table's triggers refuse UPDATE and DELETE; an attacker who drops them and edits
a row, deletes one, rewrites the chain after an edit, or cuts off the tail is caught by
``helpline audit verify``, which exits non-zero and names the entry. An untouched chain
verifies with exit 0."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from protocol.auditchain import entry_hash

from .conftest import RelayProcess, run_helpline, totp_now
from .helpers import cli_login, relay_db, rest


@pytest.fixture
def cli(relay: RelayProcess, tmp_path: Path) -> Path:
    """A ``helpline`` config directory logged in as the first admin."""
    config = tmp_path / "cli"
    admin = relay.admin
    cli_login(relay, config, admin["username"], admin["password"], totp_now(admin["totp_secret"]))
    token = json.loads((config / "credentials.json").read_text())["token"]
    # A few more entries, so there is a middle to tamper with.
    for group in ("north", "south", "east"):
        status, body = rest(relay, "POST", "/api/v1/groups", token=token, body={"name": group})
        assert status == 201, body
    return config


def seqs(relay: RelayProcess) -> list[int]:
    with relay_db(relay) as db:
        return [row[0] for row in db.execute("SELECT seq FROM audit ORDER BY seq")]


def seq_of(relay: RelayProcess, action: str, target: str) -> int:
    with relay_db(relay) as db:
        row = db.execute(
            "SELECT seq FROM audit WHERE action = ? AND target = ?", (action, target)
        ).fetchone()
    assert row is not None
    return int(row[0])


def attacker_sql(relay: RelayProcess, *statements: str) -> None:
    """Drop the append-only triggers, then run ``statements``."""
    with relay_db(relay) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in statements:
            db.execute(statement)


def verify(config: Path) -> tuple[int, str, str]:
    result = run_helpline(config, "audit", "verify")
    return result.returncode, result.stdout, result.stderr


def relay_still_serves(relay: RelayProcess, config: Path) -> None:
    result = run_helpline(config, "admin", "groups", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert {"default", "north", "south", "east"} <= {g["name"] for g in json.loads(result.stdout)}


def test_intact_chain_verifies_and_an_edited_entry_is_named(relay: RelayProcess, cli: Path) -> None:
    code, out, err = verify(cli)
    assert code == 0, err
    count = len(seqs(relay))
    assert out.startswith(f"audit chain intact: {count} entries verified")
    local = relay.cli("audit", "verify", "--data", relay.data_dir)
    assert local.stdout.startswith(f"audit chain intact: {count} entries")

    # The table itself refuses edits and deletions.
    with relay_db(relay) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit")
    assert len(seqs(relay)) == count
    code, _, err = verify(cli)
    assert code == 0, err

    # Someone who drops the triggers first can edit a row: verify names it.
    target = seq_of(relay, "group.create", "south")
    attacker_sql(relay, f"UPDATE audit SET target = 'west' WHERE seq = {target}")  # noqa: S608

    code, out, err = verify(cli)
    assert code != 0
    assert out == ""
    assert f"audit chain BROKEN at entry {target}: entry {target} was altered" in err
    local = relay.cli("audit", "verify", "--data", relay.data_dir, check=False)
    assert local.returncode != 0
    assert f"BROKEN at entry {target}" in local.stderr

    # A careful attacker recomputes every hash from the edit onward: the chain links up
    # again, but no longer ends at the head the relay recorded outside the database.
    with relay_db(relay) as db:
        rows = db.execute(
            "SELECT seq, ts, actor, action, target, details, prev FROM audit WHERE seq >= ?"
            " ORDER BY seq",
            (target,),
        ).fetchall()
        prev = rows[0][6]
        for seq, ts, actor, action, entry_target, details, _ in rows:
            digest = entry_hash(seq, ts, actor, action, entry_target, json.loads(details), prev)
            db.execute("UPDATE audit SET prev = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
            prev = digest
    last = seqs(relay)[-1]
    code, _, err = verify(cli)
    assert code != 0
    assert f"BROKEN at entry {last}: entry {last} differs from the recorded head" in err
    relay_still_serves(relay, cli)


def test_deleted_entry_is_named(relay: RelayProcess, cli: Path) -> None:
    target = seq_of(relay, "group.create", "north")
    before = seqs(relay)
    attacker_sql(relay, f"DELETE FROM audit WHERE seq = {target}")  # noqa: S608
    assert seqs(relay) == [s for s in before if s != target]

    code, out, err = verify(cli)
    assert code != 0
    assert out == ""
    assert f"audit chain BROKEN at entry {target}: entry {target} is missing" in err
    relay_still_serves(relay, cli)


def test_truncated_tail_is_detected_by_the_recorded_head(relay: RelayProcess, cli: Path) -> None:
    before = seqs(relay)
    head = json.loads((relay.data_dir / "audit-head.json").read_text())
    assert head["seq"] == before[-1]
    keep = before[-3]
    attacker_sql(relay, f"DELETE FROM audit WHERE seq > {keep}")  # noqa: S608
    assert seqs(relay)[-1] == keep

    # What is left is a perfectly linked chain; only the head outside the database knows.
    code, out, err = verify(cli)
    assert code != 0
    assert out == ""
    assert f"audit chain BROKEN at entry {keep + 1}" in err
    assert f"entries after {keep} are missing (head is {head['seq']})" in err
    local = relay.cli("audit", "verify", "--data", relay.data_dir, check=False)
    assert local.returncode != 0
    assert f"BROKEN at entry {keep + 1}" in local.stderr
    relay_still_serves(relay, cli)


def test_truncation_stays_detected_after_new_entries(relay: RelayProcess, cli: Path) -> None:
    """Deleting the tail and letting the relay append again reuses sequence numbers;
    the recorded head keeps its place, so the break is still reported."""
    before = seqs(relay)
    head = json.loads((relay.data_dir / "audit-head.json").read_text())
    keep = before[-3]
    attacker_sql(relay, f"DELETE FROM audit WHERE seq > {keep}")  # noqa: S608
    for name in ("west", "centre", "coast"):  # the relay writes new entries over the gap
        result = run_helpline(cli, "admin", "groups", "create", name)
        assert result.returncode == 0, result.stderr
    assert seqs(relay)[-1] >= head["seq"]
    assert json.loads((relay.data_dir / "audit-head.json").read_text()) == head
    code, _, err = verify(cli)
    assert code != 0
    assert f"audit chain BROKEN at entry {head['seq']}" in err
