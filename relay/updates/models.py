"""Records of rollouts and of each device's part in one. No behaviour here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class RolloutState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # every device has its result
    HALTED = "halted"  # failures passed the limit: the rest were skipped
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # devices still offline at the expiry were skipped


class DeviceState(StrEnum):
    PENDING = "pending"  # not sent yet (its batch has not come, or it is offline)
    SENT = "sent"  # an update session is open: consent, package on its way
    INSTALLING = "installing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL_STATES = frozenset({DeviceState.SUCCEEDED, DeviceState.FAILED, DeviceState.SKIPPED})
FINAL_ROLLOUTS = frozenset(
    {RolloutState.COMPLETED, RolloutState.HALTED, RolloutState.CANCELLED, RolloutState.EXPIRED}
)


@dataclass(slots=True)
class Rollout:
    id: str
    package_sha256: str
    package_name: str
    package_version: str
    package_kind: str
    signer: str
    size: int
    created_by: str
    created_by_id: int
    target_kind: str  # "device" or "group"
    target: str
    batch_size: int
    max_failures: int
    downgrade: bool
    reason: str
    timeout: float
    state: RolloutState
    created_at: float
    expires_at: float
    message: str = ""
    finished_at: float | None = None

    def public(self) -> dict[str, Any]:
        view = asdict(self)
        view["state"] = self.state.value
        return view


@dataclass(slots=True)
class RolloutDevice:
    rollout_id: str
    device_id: str
    device_name: str
    position: int
    batch: int
    state: DeviceState = DeviceState.PENDING
    session: str = ""
    exit_code: int | None = None
    message: str = ""
    log_tail: str = ""
    updated_at: float | None = None

    def public(self) -> dict[str, Any]:
        view = asdict(self)
        view["state"] = self.state.value
        return view
