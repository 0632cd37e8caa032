"""The embedded SQLite store: WAL mode, one connection owned by one worker thread.

SQLite calls block, so every query runs on a single dedicated thread; the
event loop only awaits the result. One thread also serialises writers, which
is what makes the audit chain's read-last-then-append atomic.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from protocol.auditchain import GENESIS, entry_hash
from protocol.errors import Conflict, NotFound

from ..models import (
    ApiToken,
    AuditEntry,
    Device,
    EnrolmentToken,
    Group,
    SessionRecord,
    SshKey,
    User,
    UserRole,
)
from .base import Store
from .schema import MIGRATIONS
from .updates import SQLiteRolloutStore

T = TypeVar("T")

_USER_FIELDS = {
    "full_name",
    "role",
    "password_hash",
    "totp_secret",
    "totp_required",
    "totp_last_step",
    "failed_attempts",
    "locked_until",
    "disabled",
    "read_all_recordings",
}
_SESSION_FIELDS = set(SessionRecord.__dataclass_fields__) - {"id"}
_DEVICE_FIELDS = {"name", "group", "revoked_at", "last_seen", "inventory"}


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        full_name=row["full_name"],
        role=UserRole(row["role"]),
        password_hash=row["password_hash"],
        totp_secret=row["totp_secret"],
        totp_required=bool(row["totp_required"]),
        totp_last_step=row["totp_last_step"],
        failed_attempts=row["failed_attempts"],
        locked_until=row["locked_until"],
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
        read_all_recordings=bool(row["read_all_recordings"]),
    )


def _device(row: sqlite3.Row) -> Device:
    return Device(
        id=row["id"],
        name=row["name"],
        group=row["group_name"],
        cert_fingerprint=row["cert_fingerprint"],
        cert_serial=row["cert_serial"],
        enrolled_at=row["enrolled_at"],
        revoked_at=row["revoked_at"],
        last_seen=row["last_seen"],
        inventory=json.loads(row["inventory"]),
    )


def _token(row: sqlite3.Row) -> EnrolmentToken:
    return EnrolmentToken(
        id=row["id"],
        token_hash=row["token_hash"],
        group=row["group_name"],
        expires_at=row["expires_at"],
        max_uses=row["max_uses"],
        uses=row["uses"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        revoked=bool(row["revoked"]),
    )


def _audit(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        seq=row["seq"],
        ts=row["ts"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        details=json.loads(row["details"]),
        prev=row["prev"],
        hash=row["hash"],
    )


_DEVICE_SELECT = (
    "SELECT devices.*, groups.name AS group_name FROM devices "
    "JOIN groups ON groups.id = devices.group_id"
)
_TOKEN_SELECT = (
    "SELECT enrolment_tokens.*, groups.name AS group_name FROM enrolment_tokens "
    "JOIN groups ON groups.id = enrolment_tokens.group_id"
)


class SQLiteStore(SQLiteRolloutStore, Store):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    # -- plumbing ------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        new = not self.path.exists()
        if new:
            # Create the file 0600 before SQLite opens it: it holds password hashes.
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        self._db = db
        self._migrate()

    def _migrate(self) -> None:
        db = self._conn
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema {version} is newer than this relay knows ({len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        def run() -> int:
            try:
                return self._conn.execute(sql, params).rowcount
            except sqlite3.IntegrityError as exc:
                raise Conflict(_conflict_message(exc)) from None

        return await self._run(run)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._run(lambda: self._conn.execute(sql, params).fetchall())

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._conn.close)
            self._db = None
        self._executor.shutdown(wait=True)

    # -- users -----------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        full_name: str,
        role: UserRole,
        password_hash: str,
        totp_secret: str | None,
        totp_required: bool,
    ) -> User:
        await self._execute(
            "INSERT INTO users (username, full_name, role, password_hash, totp_secret,"
            " totp_required, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                username,
                full_name,
                role.value,
                password_hash,
                totp_secret,
                totp_required,
                time.time(),
            ),
        )
        user = await self.get_user(username)
        assert user is not None
        return user

    async def get_user(self, username: str) -> User | None:
        row = await self._fetchone("SELECT * FROM users WHERE username = ?", (username,))
        return None if row is None else _user(row)

    async def get_user_by_id(self, user_id: int) -> User | None:
        row = await self._fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return None if row is None else _user(row)

    async def list_users(self) -> list[User]:
        return [_user(r) for r in await self._fetchall("SELECT * FROM users ORDER BY username")]

    async def update_user(self, user_id: int, **fields: Any) -> None:
        unknown = set(fields) - _USER_FIELDS
        if unknown:
            raise ValueError(f"unknown user fields: {sorted(unknown)}")
        if not fields:
            return
        values = [v.value if isinstance(v, UserRole) else v for v in fields.values()]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        changed = await self._execute(
            f"UPDATE users SET {assignments} WHERE id = ?",  # noqa: S608 (names from a whitelist)
            (*values, user_id),
        )
        if not changed:
            raise NotFound("no such user")

    async def delete_user(self, user_id: int) -> None:
        if not await self._execute("DELETE FROM users WHERE id = ?", (user_id,)):
            raise NotFound("no such user")

    async def claim_login_attempt(
        self, user_id: int, now: float, threshold: int, lockout_seconds: float
    ) -> int | None:
        def claim() -> int | None:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT failed_attempts, locked_until FROM users WHERE id = ?", (user_id,)
                ).fetchone()
                if row is None or (row[1] is not None and row[1] > now):
                    db.execute("ROLLBACK")
                    return None
                attempts = (0 if row[1] is not None else row[0]) + 1
                locked_until = now + lockout_seconds if attempts >= threshold else None
                db.execute(
                    "UPDATE users SET failed_attempts = ?, locked_until = ? WHERE id = ?",
                    (attempts, locked_until, user_id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return attempts

        return await self._run(claim)

    async def claim_totp_step(self, user_id: int, step: int) -> bool:
        changed = await self._execute(
            "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
            (step, user_id, step),
        )
        return changed == 1

    # -- groups and grants -----------------------------------------------------------

    async def create_group(self, name: str) -> Group:
        await self._execute(
            "INSERT INTO groups (name, created_at) VALUES (?, ?)", (name, time.time())
        )
        group = await self.get_group(name)
        assert group is not None
        return group

    async def get_group(self, name: str) -> Group | None:
        row = await self._fetchone("SELECT * FROM groups WHERE name = ?", (name,))
        return None if row is None else Group(row["id"], row["name"], row["created_at"])

    async def list_groups(self) -> list[Group]:
        rows = await self._fetchall("SELECT * FROM groups ORDER BY name")
        return [Group(r["id"], r["name"], r["created_at"]) for r in rows]

    async def delete_group(self, name: str) -> None:
        if not await self._execute("DELETE FROM groups WHERE name = ?", (name,)):
            raise NotFound("no such group")

    async def _group_id(self, name: str) -> int:
        group = await self.get_group(name)
        if group is None:
            raise NotFound(f"no group named {name!r}")
        return group.id

    async def add_grant(self, user_id: int, group: str) -> None:
        group_id = await self._group_id(group)
        await self._execute(
            "INSERT OR IGNORE INTO grants (user_id, group_id) VALUES (?, ?)", (user_id, group_id)
        )

    async def remove_grant(self, user_id: int, group: str) -> None:
        group_id = await self._group_id(group)
        if not await self._execute(
            "DELETE FROM grants WHERE user_id = ? AND group_id = ?", (user_id, group_id)
        ):
            raise NotFound("no such grant")

    async def list_grants(self) -> list[tuple[str, str]]:
        rows = await self._fetchall(
            "SELECT users.username, groups.name FROM grants"
            " JOIN users ON users.id = grants.user_id JOIN groups ON groups.id = grants.group_id"
            " ORDER BY users.username, groups.name"
        )
        return [(r[0], r[1]) for r in rows]

    async def granted_groups(self, user_id: int) -> set[str]:
        rows = await self._fetchall(
            "SELECT groups.name FROM grants JOIN groups ON groups.id = grants.group_id"
            " WHERE grants.user_id = ?",
            (user_id,),
        )
        return {r[0] for r in rows}

    # -- devices ---------------------------------------------------------------------

    async def create_device(self, device: Device) -> None:
        group_id = await self._group_id(device.group)
        await self._execute(
            "INSERT INTO devices (id, name, group_id, cert_fingerprint, cert_serial, enrolled_at,"
            " revoked_at, last_seen, inventory) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device.id,
                device.name,
                group_id,
                device.cert_fingerprint,
                device.cert_serial,
                device.enrolled_at,
                device.revoked_at,
                device.last_seen,
                json.dumps(device.inventory),
            ),
        )

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._fetchone(f"{_DEVICE_SELECT} WHERE devices.id = ?", (device_id,))
        return None if row is None else _device(row)

    async def get_device_by_name(self, name: str) -> Device | None:
        row = await self._fetchone(f"{_DEVICE_SELECT} WHERE devices.name = ?", (name,))
        return None if row is None else _device(row)

    async def list_devices(self) -> list[Device]:
        return [_device(r) for r in await self._fetchall(f"{_DEVICE_SELECT} ORDER BY devices.name")]

    async def update_device(self, device_id: str, **fields: Any) -> None:
        unknown = set(fields) - _DEVICE_FIELDS
        if unknown:
            raise ValueError(f"unknown device fields: {sorted(unknown)}")
        columns: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "group":
                columns["group_id"] = await self._group_id(value)
            elif name == "inventory":
                columns["inventory"] = json.dumps(value)
            else:
                columns[name] = value
        if not columns:
            return
        assignments = ", ".join(f"{name} = ?" for name in columns)
        changed = await self._execute(
            f"UPDATE devices SET {assignments} WHERE id = ?",  # noqa: S608 (names from a whitelist)
            (*columns.values(), device_id),
        )
        if not changed:
            raise NotFound("no such device")

    async def revoked_serials(self) -> list[tuple[str, float]]:
        rows = await self._fetchall(
            "SELECT cert_serial, revoked_at FROM devices WHERE revoked_at IS NOT NULL"
        )
        return [(r[0], r[1]) for r in rows]

    # -- enrolment tokens --------------------------------------------------------------

    async def create_enrolment_token(
        self, token_hash: str, group: str, expires_at: float, max_uses: int, created_by: str
    ) -> EnrolmentToken:
        group_id = await self._group_id(group)
        await self._execute(
            "INSERT INTO enrolment_tokens (token_hash, group_id, expires_at, max_uses,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash, group_id, expires_at, max_uses, created_by, time.time()),
        )
        token = await self.get_enrolment_token(token_hash)
        assert token is not None
        return token

    async def get_enrolment_token(self, token_hash: str) -> EnrolmentToken | None:
        row = await self._fetchone(f"{_TOKEN_SELECT} WHERE token_hash = ?", (token_hash,))
        return None if row is None else _token(row)

    async def list_enrolment_tokens(self) -> list[EnrolmentToken]:
        rows = await self._fetchall(f"{_TOKEN_SELECT} ORDER BY enrolment_tokens.id")
        return [_token(r) for r in rows]

    async def use_enrolment_token(self, token_id: int, now: float) -> bool:
        changed = await self._execute(
            "UPDATE enrolment_tokens SET uses = uses + 1 WHERE id = ? AND uses < max_uses"
            " AND expires_at > ? AND revoked = 0",
            (token_id, now),
        )
        return changed == 1

    async def revoke_enrolment_token(self, token_id: int) -> None:
        if not await self._execute(
            "UPDATE enrolment_tokens SET revoked = 1 WHERE id = ?", (token_id,)
        ):
            raise NotFound("no such enrolment token")

    # -- api tokens --------------------------------------------------------------------

    async def add_api_token(self, token: ApiToken) -> None:
        await self._execute(
            "INSERT INTO api_tokens (token_hash, user_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (token.token_hash, token.user_id, token.created_at, token.expires_at),
        )

    async def get_api_token(self, token_hash: str) -> ApiToken | None:
        row = await self._fetchone("SELECT * FROM api_tokens WHERE token_hash = ?", (token_hash,))
        if row is None:
            return None
        return ApiToken(row["token_hash"], row["user_id"], row["created_at"], row["expires_at"])

    async def delete_api_token(self, token_hash: str) -> None:
        await self._execute("DELETE FROM api_tokens WHERE token_hash = ?", (token_hash,))

    async def delete_user_tokens(self, user_id: int) -> None:
        await self._execute("DELETE FROM api_tokens WHERE user_id = ?", (user_id,))

    # -- audit -------------------------------------------------------------------------

    async def append_audit(
        self, ts: str, actor: str, action: str, target: str, details: dict[str, Any]
    ) -> AuditEntry:
        def append() -> AuditEntry:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
                digest = entry_hash(seq, ts, actor, action, target, details, prev)
                db.execute(
                    "INSERT INTO audit (seq, ts, actor, action, target, details, prev, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, ts, actor, action, target, json.dumps(details), prev, digest),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return AuditEntry(seq, ts, actor, action, target, details, prev, digest)

        return await self._run(append)

    async def list_audit(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> Sequence[AuditEntry]:
        clauses = ["seq > ?"]
        params: list[Any] = [after]
        for column, value in (("actor", actor), ("action", action), ("target", target)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        params.append(limit)
        rows = await self._fetchall(
            f"SELECT * FROM audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",  # noqa: S608
            params,
        )
        return [_audit(r) for r in rows]

    # -- sessions --------------------------------------------------------------------

    async def create_session(self, record: SessionRecord) -> None:
        names = list(SessionRecord.__dataclass_fields__)
        await self._execute(
            f"INSERT INTO sessions ({', '.join(names)})"  # noqa: S608 (names from the dataclass)
            f" VALUES ({', '.join('?' for _ in names)})",
            [getattr(record, name) for name in names],
        )

    async def update_session(self, session_id: str, **fields: Any) -> None:
        unknown = set(fields) - _SESSION_FIELDS
        if unknown:
            raise ValueError(f"unknown session fields: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._execute(
            f"UPDATE sessions SET {assignments} WHERE id = ?",  # noqa: S608 (names from a whitelist)
            (*fields.values(), session_id),
        )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._fetchone("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return None if row is None else SessionRecord(**dict(row))

    async def list_sessions(
        self, *, limit: int = 100, username: str | None = None, unfinished: bool = False
    ) -> list[SessionRecord]:
        clauses, params = ["1 = 1"], []
        if username is not None:
            clauses.append("username = ?")
            params.append(username)
        if unfinished:
            clauses.append("ended_at IS NULL")
        rows = await self._fetchall(
            f"SELECT * FROM sessions WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY requested_at DESC LIMIT ?",
            (*params, limit),
        )
        return [SessionRecord(**dict(r)) for r in rows]

    # -- ssh keys ----------------------------------------------------------------------

    async def add_ssh_key(
        self, user_id: int, name: str, public_key: str, fingerprint: str
    ) -> SshKey:
        await self._execute(
            "INSERT INTO ssh_keys (user_id, name, public_key, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, name, public_key, fingerprint, time.time()),
        )
        key = await self.find_ssh_key(fingerprint)
        assert key is not None
        return key

    async def find_ssh_key(self, fingerprint: str) -> SshKey | None:
        row = await self._fetchone("SELECT * FROM ssh_keys WHERE fingerprint = ?", (fingerprint,))
        return None if row is None else SshKey(**dict(row))

    async def list_ssh_keys(self, user_id: int) -> list[SshKey]:
        rows = await self._fetchall(
            "SELECT * FROM ssh_keys WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [SshKey(**dict(r)) for r in rows]

    async def delete_ssh_key(self, user_id: int, key: str) -> None:
        changed = await self._execute(
            "DELETE FROM ssh_keys WHERE user_id = ?"
            " AND (fingerprint = ? OR name = ? OR CAST(id AS TEXT) = ?)",
            (user_id, key, key, key),
        )
        if not changed:
            raise NotFound("no such key")


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    depth = 0
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        current.append(line)
        upper = stripped.upper()
        if upper.startswith("BEGIN") or " BEGIN " in f" {upper} ":
            depth += 1
        if upper.startswith("END;") or upper.endswith(" END;"):
            depth -= 1
        if stripped.endswith(";") and depth == 0:
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


def _conflict_message(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    if "UNIQUE" in text:
        return "that name is already taken"
    if "FOREIGN KEY" in text:
        return "still in use"
    return "conflicts with existing data"
