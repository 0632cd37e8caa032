"""Rollouts in the SQLite store: created with their devices at once, updated, listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store import SQLiteStore, open_store
from relay.updates.models import DeviceState, Rollout, RolloutDevice, RolloutState


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = await open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    yield opened
    await opened.close()


def _rollout(rollout_id: str, created_by: str = "ana", created_at: float = 1.0) -> Rollout:
    return Rollout(
        id=rollout_id,
        package_sha256="ab" * 32,
        package_name="tool",
        package_version="1.0",
        package_kind="software",
        signer="sha256:" + "cd" * 32,
        size=10,
        created_by=created_by,
        created_by_id=1,
        target_kind="group",
        target="fleet",
        batch_size=2,
        max_failures=0,
        downgrade=False,
        reason="r",
        timeout=600.0,
        state=RolloutState.RUNNING,
        created_at=created_at,
        expires_at=created_at + 100,
    )


async def test_rollouts_and_their_devices(store: SQLiteStore) -> None:
    devices = [RolloutDevice("r1", f"d{i}", f"node-{i}", i, i // 2) for i in range(3)]
    await store.create_rollout(_rollout("r1"), devices)
    await store.create_rollout(_rollout("r2", "bob", created_at=2.0), [])
    loaded = await store.get_rollout("r1")
    assert loaded == _rollout("r1")
    assert [r.id for r in await store.list_rollouts()] == ["r2", "r1"]
    assert [r.id for r in await store.list_rollouts(created_by="ana")] == ["r1"]
    await store.update_rollout("r2", state=RolloutState.HALTED, message="m", finished_at=3.0)
    assert [r.id for r in await store.list_rollouts(unfinished=True)] == ["r1"]
    await store.update_rollout_device(
        "r1", "d1", state=DeviceState.FAILED, exit_code=3, log_tail="boom", session="s"
    )
    rows = await store.rollout_devices("r1")
    assert [d.device_name for d in rows] == ["node-0", "node-1", "node-2"]
    assert rows[1].state is DeviceState.FAILED and rows[1].exit_code == 3
    assert rows[0].state is DeviceState.PENDING and rows[2].batch == 1
    assert await store.get_rollout("nope") is None
    with pytest.raises(ValueError, match="cannot update"):
        await store.update_rollout("r1", created_by="mallory")
    with pytest.raises(ValueError, match="cannot update"):
        await store.update_rollout_device("r1", "d1", device_name="x")


async def test_a_rollout_is_stored_whole_or_not_at_all(store: SQLiteStore) -> None:
    twice = [RolloutDevice("r1", "d", "n", 0, 0), RolloutDevice("r1", "d", "n", 1, 0)]
    with pytest.raises(Exception, match="UNIQUE"):
        await store.create_rollout(_rollout("r1"), twice)
    assert await store.get_rollout("r1") is None
