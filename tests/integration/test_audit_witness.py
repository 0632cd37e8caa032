"""``helpline audit verify`` as a witness: someone who can write the relay's data directory
rewrites the whole chain while the relay is stopped (every hash recomputed, the head file
rewritten to match), so the relay itself vouches for the new chain; the CLI remembers the
head it verified last (per relay, 0600 in its config directory) and fails loudly, with
its own exit status, when the chain no longer extends it. ``--accept-new-head``
re-anchors deliberately. ``helpline audit export`` writes copies that verify on their own
and that the live chain is checked against."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from certs.fingerprints import fingerprint
from protocol.auditchain import GENESIS, entry_hash

from .conftest import RelayProcess, run_helpline, totp_now
from .helpers import cli_login, relay_db, rest
from .test_audit_tamper import attacker_sql

EXIT_REWRITTEN = 4
EXIT_BROKEN = 3


@pytest.fixture
def cli(relay: RelayProcess, tmp_path: Path) -> Path:
    config = tmp_path / "cli"
    admin = relay.admin
    cli_login(relay, config, admin["username"], admin["password"], totp_now(admin["totp_secret"]))
    add_groups(relay, config, "north", "south", "east")
    return config


def add_groups(relay: RelayProcess, config: Path, *names: str) -> None:
    token = json.loads((config / "credentials.json").read_text())["token"]
    for name in names:
        status, body = rest(relay, "POST", "/api/v1/groups", token=token, body={"name": name})
        assert status == 201, body


def verify(config: Path, *extra: str) -> tuple[int, str, str]:
    result = run_helpline(config, "audit", "verify", *extra)
    return result.returncode, result.stdout, result.stderr


def last_seq(relay: RelayProcess) -> int:
    with relay_db(relay) as db:
        return int(db.execute("SELECT max(seq) FROM audit").fetchone()[0])


def rewrite_whole_chain(relay: RelayProcess, keep: int | None = None) -> None:
    """With the relay stopped: edit an entry (or cut the chain after ``keep``), recompute
    every hash after it and write the head file to match, as a careful attacker would."""
    relay.stop()
    statements = [] if keep is None else [f"DELETE FROM audit WHERE seq > {keep}"]  # noqa: S608
    if keep is None:
        statements.append("UPDATE audit SET target = 'rewritten' WHERE seq = 2")
    attacker_sql(relay, *statements)
    with relay_db(relay) as db:
        rows = db.execute(
            "SELECT seq, ts, actor, action, target, details FROM audit ORDER BY seq"
        ).fetchall()
        prev = GENESIS
        for seq, ts, actor, action, target, details in rows:
            digest = entry_hash(seq, ts, actor, action, target, json.loads(details), prev)
            db.execute("UPDATE audit SET prev = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
            prev = digest
        seq = rows[-1][0]
    (relay.data_dir / "audit-head.json").write_text(json.dumps({"seq": seq, "hash": prev}))
    relay.start()


def witness_file(config: Path) -> dict[str, dict[str, object]]:
    path = config / "audit-witness.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())["relays"]  # type: ignore[no-any-return]


def test_a_chain_rewritten_whole_on_disk_fails_loudly(relay: RelayProcess, cli: Path) -> None:
    code, out, err = verify(cli)
    assert code == 0, err
    assert "witness: first check of this relay" in out
    witnessed = last_seq(relay)
    ca = x509.load_pem_x509_certificate(relay.ca_pem.encode())
    relays = witness_file(cli)
    assert list(relays) == [fingerprint(ca)]
    assert relays[fingerprint(ca)]["seq"] == witnessed
    assert relays[fingerprint(ca)]["url"] == relay.url

    add_groups(relay, cli, "later")
    code, out, err = verify(cli)
    assert code == 0, err
    assert f"witness: extends entry {witnessed} verified before" in out
    witnessed = last_seq(relay)

    rewrite_whole_chain(relay)
    # The relay's own check takes the rewritten chain and head for good ones.
    local = relay.cli("audit", "verify", "--data", relay.data_dir)
    assert local.stdout.startswith("audit chain intact")
    code, out, err = verify(cli)
    assert code == EXIT_REWRITTEN, (code, out, err)
    assert out == ""
    assert "AUDIT LOG REWRITTEN" in err
    assert f"entry {witnessed} has hash" in err
    assert "helpline audit verify --accept-new-head" in err
    # Failing again until someone decides: the witness was not moved.
    assert witness_file(cli)[fingerprint(ca)]["seq"] == witnessed
    code, _, _ = verify(cli)
    assert code == EXIT_REWRITTEN

    code, out, err = verify(cli, "--accept-new-head")
    assert code == 0, err
    assert f"re-anchored on request: entry {witnessed} has hash" in err
    code, out, err = verify(cli)
    assert code == 0, err
    # The relay and its data are unharmed: it still serves.
    groups = run_helpline(cli, "admin", "groups", "list", "--json")
    assert {"south", "later"} <= {g["name"] for g in json.loads(groups.stdout)}


def test_a_chain_cut_back_and_rewritten_fails_as_going_back(relay: RelayProcess, cli: Path) -> None:
    code, _, err = verify(cli)
    assert code == 0, err
    witnessed = last_seq(relay)
    rewrite_whole_chain(relay, keep=2)
    now = last_seq(relay)
    assert now < witnessed
    code, out, err = verify(cli)
    assert code == EXIT_REWRITTEN, (code, out, err)
    assert f"the chain now ends at entry {now}, but entry {witnessed} was verified" in err
    assert "the sequence went back" in err


def test_a_broken_chain_is_still_broken_not_rewritten(relay: RelayProcess, cli: Path) -> None:
    code, _, err = verify(cli)
    assert code == 0, err
    attacker_sql(relay, "UPDATE audit SET target = 'west' WHERE seq = 2")
    code, _, err = verify(cli)
    assert code == EXIT_BROKEN
    assert "audit chain BROKEN at entry 2" in err


def test_an_export_verifies_on_its_own_and_guards_the_live_chain(
    relay: RelayProcess, cli: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "audit.jsonl"
    result = run_helpline(cli, "audit", "export", "-o", str(whole))
    assert result.returncode == 0, result.stderr
    lines = whole.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "helpline-audit-export"
    assert header["relay"] == relay.url and header["from"] == 1
    entries = [json.loads(line) for line in lines[1:]]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert header["head"]["seq"] <= entries[-1]["seq"]
    code, out, err = verify(cli, "--export", str(whole))
    assert code == 0, err
    assert out.startswith(f"exported audit chain intact: {len(entries)} entries from entry 1")

    # From a sequence on (to standard output): verifies too.
    part = run_helpline(cli, "audit", "export", "--from", "3")
    assert part.returncode == 0, part.stderr
    tail = tmp_path / "tail.jsonl"
    tail.write_text(part.stdout)
    assert json.loads(part.stdout.splitlines()[1])["seq"] == 3
    code, out, err = verify(cli, "--export", str(tail))
    assert code == 0, err

    # An edited copy does not verify.
    edited = entries[2] | {"target": "someone-else"}
    spoiled = tmp_path / "spoiled.jsonl"
    spoiled.write_text("\n".join([lines[0], *lines[1:3], json.dumps(edited), *lines[4:]]) + "\n")
    code, _, err = verify(cli, "--export", str(spoiled))
    assert code == EXIT_BROKEN
    assert "exported audit chain BROKEN at entry 3: entry 3 was altered" in err

    # The live chain checked against the copy kept elsewhere, by a CLI that never verified
    # before (a fresh witness): the rewrite shows against the copy.
    assert verify(cli, "--against", str(whole))[0] == 0
    rewrite_whole_chain(relay)
    (cli / "audit-witness.json").unlink()
    code, _, err = verify(cli, "--against", str(whole))
    assert code == EXIT_REWRITTEN, err
    assert f"differs from the copy in {whole}" in err
