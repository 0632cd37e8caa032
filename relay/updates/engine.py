"""Rollouts: a package to a device or a group, in batches, halted on failures.

A rollout's devices (its target's, at creation, ordered by name) are cut into batches.
The relay sends the package to every online device of the first batch, waits for their
results, then goes on to the next batch. A device that is offline when its batch comes
does not hold the rollout back: it stays ``pending`` and receives the package when it
reconnects (:meth:`RolloutEngine.device_online`), until the rollout expires; then it is
``skipped``. When the failures pass ``max_failures`` the rollout halts: devices not yet
sent are ``skipped``; those in flight finish and are recorded. A cancel does the same.

Each step is in the store (so ``helpline update status`` shows it) and in the audit log,
under the name of the user who pushed the rollout. After a relay restart, running
rollouts continue; devices that were in flight are recorded as failed, result unknown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.errors import NotFound
from protocol.updates import AgentUpdateReport

from ..models import User
from .delivery import DeviceDelivery, Outcome
from .models import (
    FINAL_STATES,
    DeviceState,
    Rollout,
    RolloutDevice,
    RolloutState,
)

if TYPE_CHECKING:
    from ..links import AgentLink
    from ..state import RelayState

log = logging.getLogger("helpline.updates")

#: How often expiries are checked, in seconds.
TICK = 1.0


def package_path(relay: RelayState, sha256: str) -> Path:
    return relay.config.data_dir / "packages" / f"{sha256}.hlpkg"


class RolloutRun:
    """One running rollout in memory: its devices, and the deliveries in flight."""

    def __init__(self, engine: RolloutEngine, rollout: Rollout, devices: list[RolloutDevice]):
        self.engine = engine
        self.rollout = rollout
        self.devices = {d.device_id: d for d in devices}
        self.deliveries: dict[str, DeviceDelivery] = {}  # by device id
        self.lock = asyncio.Lock()
        self.batches = max((d.batch for d in devices), default=-1) + 1
        self.current = 0

    @property
    def relay(self) -> RelayState:
        return self.engine.relay

    def failures(self) -> int:
        return sum(1 for d in self.devices.values() if d.state is DeviceState.FAILED)

    def in_flight(self) -> bool:
        return bool(self.deliveries)

    # -- moving on ------------------------------------------------------------------------

    async def advance(self) -> None:
        async with self.lock:
            await self._advance()

    async def _advance(self) -> None:
        rollout = self.rollout
        if rollout.state is not RolloutState.RUNNING:
            await self._maybe_forget()
            return
        if self.failures() > rollout.max_failures:
            await self._stop(
                RolloutState.HALTED,
                f"{self.failures()} failed, more than the limit of {rollout.max_failures}",
                "update.halt",
            )
            return
        while self.current < self.batches:
            batch = [d for d in self.devices.values() if d.batch == self.current]
            for device in batch:
                if device.state is DeviceState.PENDING and device.device_id not in self.deliveries:
                    if self.relay.presence.is_online(device.device_id):
                        await self._send(device)
                    elif not device.message:
                        await self.set(device, DeviceState.PENDING, "offline: sent when it returns")
            if any(d.device_id in self.deliveries for d in batch):
                return  # wait for this batch's results
            self.current += 1
        if self.in_flight():
            return
        if all(d.state in FINAL_STATES for d in self.devices.values()):
            await self._stop(
                RolloutState.COMPLETED, "every device has its result", "update.complete"
            )

    async def _send(self, device: RolloutDevice) -> None:
        user = await self.relay.store.get_user_by_id(self.rollout.created_by_id)
        if user is None or user.disabled:
            await self.finish_device(
                device, Outcome(DeviceState.FAILED, "the pushing account was deleted or disabled")
            )
            return
        delivery = DeviceDelivery(
            self.relay.broker,
            self.rollout,
            device,
            user,
            package_path(self.relay, self.rollout.package_sha256),
            self._progress,
        )
        self.deliveries[device.device_id] = delivery
        self.engine.spawn(self._deliver(device, delivery), f"update {device.device_name}")

    async def _deliver(self, device: RolloutDevice, delivery: DeviceDelivery) -> None:
        try:
            outcome = await delivery.run()
        except Exception:
            log.exception("rollout %s: delivery to %s failed", self.rollout.id, device.device_name)
            outcome = Outcome(DeviceState.FAILED, "internal error in the relay")
        self.deliveries.pop(device.device_id, None)
        if outcome.state is DeviceState.PENDING:
            await self.set(device, DeviceState.PENDING, outcome.message)
        else:
            await self.finish_device(device, outcome)
        await self.advance()

    async def _progress(
        self, device: RolloutDevice, state: DeviceState, message: str, action: str | None
    ) -> None:
        await self.set(device, state, message)
        if action is not None:
            await self.relay.audit.record(
                self.rollout.created_by,
                action,
                device.device_name,
                rollout=self.rollout.id,
                session=device.session,
                package=self.rollout.package_name,
                version=self.rollout.package_version,
                message=message,
            )

    async def finish_device(self, device: RolloutDevice, outcome: Outcome) -> None:
        await self.set(
            device,
            outcome.state,
            outcome.message,
            exit_code=outcome.exit_code,
            log_tail=outcome.log_tail,
        )
        await self.relay.audit.record(
            self.rollout.created_by,
            "update.rollback" if outcome.rolled_back else "update.result",
            device.device_name,
            rollout=self.rollout.id,
            session=device.session,
            package=self.rollout.package_name,
            version=self.rollout.package_version,
            state=outcome.state.value,
            exit_code=outcome.exit_code,
            message=outcome.message,
            log_tail=outcome.log_tail[-400:],
        )

    async def set(
        self, device: RolloutDevice, state: DeviceState, message: str, **fields: Any
    ) -> None:
        device.state = state
        device.message = message[:1024]
        device.updated_at = time.time()
        for name, value in fields.items():
            setattr(device, name, value)
        changes = {"session": device.session, **fields}
        await self.relay.store.update_rollout_device(
            self.rollout.id,
            device.device_id,
            state=state,
            message=device.message,
            updated_at=device.updated_at,
            **changes,
        )

    async def _stop(self, state: RolloutState, message: str, action: str, **details: Any) -> None:
        rollout = self.rollout
        rollout.state = state
        rollout.message = message
        rollout.finished_at = time.time()
        skipped = 0
        for device in self.devices.values():
            if device.state is DeviceState.PENDING and device.device_id not in self.deliveries:
                await self.set(
                    device, DeviceState.SKIPPED, f"skipped: rollout {state.value} ({message})"
                )
                skipped += 1
        await self.relay.store.update_rollout(
            rollout.id, state=state, message=message, finished_at=rollout.finished_at
        )
        await self.relay.audit.record(
            rollout.created_by,
            action,
            f"{rollout.target_kind}:{rollout.target}",
            rollout=rollout.id,
            package=rollout.package_name,
            version=rollout.package_version,
            message=message,
            skipped=skipped,
            failed=self.failures(),
            **details,
        )
        await self._maybe_forget()

    async def _maybe_forget(self) -> None:
        if self.rollout.state is not RolloutState.RUNNING and not self.in_flight():
            self.engine.runs.pop(self.rollout.id, None)

    async def device_online(self, device_id: str) -> None:
        async with self.lock:
            device = self.devices.get(device_id)
            if (
                self.rollout.state is RolloutState.RUNNING
                and device is not None
                and device.state is DeviceState.PENDING
                and device.batch <= self.current
                and device_id not in self.deliveries
            ):
                await self._send(device)

    async def expire_if_due(self, now: float) -> None:
        async with self.lock:
            if self.rollout.state is RolloutState.RUNNING and now >= self.rollout.expires_at:
                await self._stop(
                    RolloutState.EXPIRED, "devices still offline at the expiry", "update.expire"
                )

    async def cancel(self, user: User) -> None:
        async with self.lock:
            if self.rollout.state is RolloutState.RUNNING:
                await self._stop(
                    RolloutState.CANCELLED, f"cancelled by {user.username}", "update.cancel"
                )


class RolloutEngine:
    def __init__(self, relay: RelayState) -> None:
        self.relay = relay
        self.runs: dict[str, RolloutRun] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Pick up the rollouts a previous run of the relay left running."""
        for rollout in await self.relay.store.list_rollouts(limit=10_000, unfinished=True):
            devices = await self.relay.store.rollout_devices(rollout.id)
            run = RolloutRun(self, rollout, devices)
            for device in devices:
                if device.state in (DeviceState.SENT, DeviceState.INSTALLING):
                    await run.finish_device(
                        device,
                        Outcome(DeviceState.FAILED, "the relay restarted during the update"),
                    )
            self.runs[rollout.id] = run
            self.spawn(run.advance(), f"rollout {rollout.id}")
        self.spawn(self._tick(), "rollout expiries")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.time()
            for run in list(self.runs.values()):
                await run.expire_if_due(now)

    async def begin(self, rollout: Rollout, devices: list[RolloutDevice]) -> None:
        await self.relay.store.create_rollout(rollout, devices)
        run = RolloutRun(self, rollout, devices)
        self.runs[rollout.id] = run
        await run.advance()

    async def cancel(self, rollout_id: str, user: User) -> None:
        run = self.runs.get(rollout_id)
        if run is None:
            raise NotFound("no running rollout with that id")
        await run.cancel(user)

    async def device_online(self, link: AgentLink) -> None:
        """A device connected: send what its rollouts hold for it (in the background: a
        failure here must never touch the agent's connection)."""
        if self.runs:
            self.spawn(self._device_online(link.device_id), f"rollouts for {link.name}")

    async def _device_online(self, device_id: str) -> None:
        for run in list(self.runs.values()):
            await run.device_online(device_id)

    async def agent_report(self, link: AgentLink, report: AgentUpdateReport) -> None:
        """The agent's verdict on its own update; never raises into its connection."""
        try:
            await self._agent_report(link, report)
        except Exception:
            log.exception("agent update report from %s could not be recorded", link.name)

    async def _agent_report(self, link: AgentLink, report: AgentUpdateReport) -> None:
        for run in list(self.runs.values()):
            delivery = run.deliveries.get(link.device_id)
            if delivery is not None and delivery.device.session == report.session:
                delivery.agent_report(report)
                return
        await self.relay.audit.record(
            link.name,
            "update.agent-report",
            link.name,
            session=report.session,
            package=report.package,
            version=report.version,
            outcome=report.outcome,
            message=report.message,
            matched=False,
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
