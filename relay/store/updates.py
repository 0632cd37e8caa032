"""Rollouts in the store: the abstract methods every backend adds, and SQLite's.

Kept beside the main store modules, as a mixin, so the update tables stay in one place.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..updates.models import DeviceState, Rollout, RolloutDevice, RolloutState

T = TypeVar("T")

_ROLLOUT_FIELDS = {"state", "message", "finished_at"}
_DEVICE_FIELDS = {"state", "session", "exit_code", "message", "log_tail", "updated_at"}


class RolloutStore(ABC):
    @abstractmethod
    async def create_rollout(self, rollout: Rollout, devices: Sequence[RolloutDevice]) -> None: ...

    @abstractmethod
    async def get_rollout(self, rollout_id: str) -> Rollout | None: ...

    @abstractmethod
    async def list_rollouts(
        self, *, limit: int = 100, created_by: str | None = None, unfinished: bool = False
    ) -> list[Rollout]: ...

    @abstractmethod
    async def update_rollout(self, rollout_id: str, **fields: Any) -> None: ...

    @abstractmethod
    async def rollout_devices(self, rollout_id: str) -> list[RolloutDevice]: ...

    @abstractmethod
    async def update_rollout_device(
        self, rollout_id: str, device_id: str, **fields: Any
    ) -> None: ...


def _rollout(row: sqlite3.Row) -> Rollout:
    values = dict(row)
    values["state"] = RolloutState(values["state"])
    values["downgrade"] = bool(values["downgrade"])
    return Rollout(**values)


def _device(row: sqlite3.Row) -> RolloutDevice:
    values = dict(row)
    values["state"] = DeviceState(values["state"])
    return RolloutDevice(**values)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, RolloutState | DeviceState) else value


class SQLiteRolloutStore(RolloutStore):
    """SQLite's rollouts; needs the host store's ``_run``/``_execute``/``_fetchall``."""

    _run: Callable[..., Any]
    _execute: Callable[..., Any]
    _fetchall: Callable[..., Any]

    @property
    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def create_rollout(self, rollout: Rollout, devices: Sequence[RolloutDevice]) -> None:
        record = rollout.public()
        columns = ", ".join(record)
        marks = ", ".join("?" for _ in record)

        def insert() -> None:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                sql = f"INSERT INTO rollouts ({columns}) VALUES ({marks})"  # noqa: S608
                db.execute(sql, list(record.values()))
                for device in devices:
                    row = device.public()
                    db.execute(
                        f"INSERT INTO rollout_devices ({', '.join(row)})"  # noqa: S608
                        f" VALUES ({', '.join('?' for _ in row)})",
                        list(row.values()),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(insert)

    async def get_rollout(self, rollout_id: str) -> Rollout | None:
        rows: list[sqlite3.Row] = await self._fetchall(
            "SELECT * FROM rollouts WHERE id = ?", (rollout_id,)
        )
        return _rollout(rows[0]) if rows else None

    async def list_rollouts(
        self, *, limit: int = 100, created_by: str | None = None, unfinished: bool = False
    ) -> list[Rollout]:
        clauses, params = [], []
        if created_by is not None:
            clauses.append("created_by = ?")
            params.append(created_by)
        if unfinished:
            clauses.append("state = 'running'")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetchall(
            f"SELECT * FROM rollouts {where} ORDER BY created_at DESC LIMIT ?",  # noqa: S608
            (*params, limit),
        )
        return [_rollout(r) for r in rows]

    async def update_rollout(self, rollout_id: str, **fields: Any) -> None:
        unknown = set(fields) - _ROLLOUT_FIELDS
        if unknown:
            raise ValueError(f"cannot update rollout fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._execute(
            f"UPDATE rollouts SET {assignments} WHERE id = ?",  # noqa: S608
            (*(_plain(v) for v in fields.values()), rollout_id),
        )

    async def rollout_devices(self, rollout_id: str) -> list[RolloutDevice]:
        rows = await self._fetchall(
            "SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY position", (rollout_id,)
        )
        return [_device(r) for r in rows]

    async def update_rollout_device(self, rollout_id: str, device_id: str, **fields: Any) -> None:
        unknown = set(fields) - _DEVICE_FIELDS
        if unknown:
            raise ValueError(f"cannot update rollout device fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._execute(
            f"UPDATE rollout_devices SET {assignments} WHERE rollout_id = ? AND device_id = ?",  # noqa: S608
            (*(_plain(v) for v in fields.values()), rollout_id, device_id),
        )
