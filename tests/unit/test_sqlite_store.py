"""The SQLite store: schema migrations, constraints, the append-only audit table."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from protocol.auditchain import verify_chain
from protocol.errors import Conflict, NotFound
from relay.models import Device, UserRole
from relay.store import SQLiteStore, open_store
from relay.store.schema import MIGRATIONS


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = await open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    yield opened
    await opened.close()


async def test_new_database_is_private_wal_and_migrated(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "relay.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_reopening_does_not_reapply_migrations(tmp_path: Path, store: SQLiteStore) -> None:
    await store.create_group("kept")
    again = await open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        assert [g.name for g in await again.list_groups()] == ["kept"]
    finally:
        await again.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    store = SQLiteStore(path)
    with pytest.raises(RuntimeError, match="newer than this relay"):
        await store.open()
    await store.close()


async def test_unique_names_raise_conflict(store: SQLiteStore) -> None:
    await store.create_user("ann", "Ann", UserRole.TECHNICIAN, "h", None, False)
    with pytest.raises(Conflict):
        await store.create_user("ann", "Other", UserRole.ADMIN, "h", None, False)
    await store.create_group("g")
    with pytest.raises(Conflict):
        await store.create_group("g")


async def test_grants_follow_users_and_groups(store: SQLiteStore) -> None:
    user = await store.create_user("bob", "Bob", UserRole.TECHNICIAN, "h", None, False)
    await store.create_group("east")
    await store.add_grant(user.id, "east")
    await store.add_grant(user.id, "east")  # idempotent
    assert await store.granted_groups(user.id) == {"east"}
    assert await store.list_grants() == [("bob", "east")]
    with pytest.raises(NotFound):
        await store.add_grant(user.id, "west")
    await store.delete_user(user.id)
    assert await store.list_grants() == []


async def test_group_with_devices_cannot_be_deleted(store: SQLiteStore) -> None:
    await store.create_group("g")
    device = Device("d1", "pc1", "g", "sha256:00", "ab", 1.0, None, None, {})
    await store.create_device(device)
    with pytest.raises(Conflict):
        await store.delete_group("g")
    await store.update_device("d1", inventory={"os": "Linux"}, last_seen=5.0)
    fetched = await store.get_device_by_name("pc1")
    assert fetched is not None and fetched.inventory == {"os": "Linux"} and fetched.last_seen == 5.0


async def test_enrolment_token_uses_are_counted_atomically(store: SQLiteStore) -> None:
    await store.create_group("g")
    token = await store.create_enrolment_token(
        "hash", "g", expires_at=100.0, max_uses=2, created_by="admin"
    )
    assert await store.use_enrolment_token(token.id, now=10.0)
    assert await store.use_enrolment_token(token.id, now=10.0)
    assert not await store.use_enrolment_token(token.id, now=10.0)  # used up
    other = await store.create_enrolment_token("hash2", "g", 100.0, 5, "admin")
    assert not await store.use_enrolment_token(other.id, now=100.0)  # expired
    await store.revoke_enrolment_token(other.id)
    refreshed = await store.get_enrolment_token("hash2")
    assert refreshed is not None and refreshed.revoked


async def test_audit_is_chained_and_append_only(tmp_path: Path, store: SQLiteStore) -> None:
    for i in range(5):
        await store.append_audit(f"2026-01-0{i + 1}", "admin", "x.y", f"t{i}", {"n": i})
    entries = [e.public() for e in await store.list_audit()]
    assert verify_chain(entries).ok
    assert [e.seq for e in await store.list_audit(after=2, limit=2)] == [3, 4]
    assert [e.target for e in await store.list_audit(target="t1")] == ["t1"]
    with sqlite3.connect(tmp_path / "relay.db") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit WHERE seq = 2")


async def test_updates_of_unknown_rows_raise_not_found(store: SQLiteStore) -> None:
    with pytest.raises(NotFound):
        await store.update_user(999, full_name="x")
    with pytest.raises(NotFound):
        await store.update_device("nope", last_seen=1.0)
    with pytest.raises(ValueError, match="unknown user fields"):
        await store.update_user(1, password="plain")


async def test_unsupported_store_url() -> None:
    with pytest.raises(ValueError, match="unsupported store URL"):
        await open_store("mysql://x")
