"""The relay's own technician leg for one device of a rollout: an ``update`` session.

The relay acts for the user who pushed the rollout: the broker authorises the session
as that user (role and group grants, at the moment it is sent), audits it under their
name, and the agent decides consent by its policy for ``update``. Once granted, the
package file goes out as the channel's data under its flow control, and the agent's
:class:`~protocol.updates.UpdateProgress` and :class:`~protocol.updates.UpdateResult`
come back here and are handed to the rollout (:class:`Outcome`).

Every wait is bounded: the whole delivery must end within the rollout's install
timeout plus ``MARGIN`` (consent, transfer, verification); an agent update then has
the same again to report that its new version is healthy (or was rolled back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import Message
from protocol.errors import ErrorCode
from protocol.sessions import EndCode, SessionKind
from protocol.updates import (
    AgentUpdateReport,
    UpdateOutcome,
    UpdateProgress,
    UpdateResult,
    UpdateStep,
)

from ..legs import TechnicianLeg
from ..models import User
from .models import DeviceState, Rollout, RolloutDevice

if TYPE_CHECKING:
    from ..broker import Broker, Session

log = logging.getLogger("helpline.updates")

#: Seconds beyond the install timeout for consent, transfer and verification.
MARGIN = 300.0
#: Bytes given to the broker, not yet passed on to the agent, before sending waits.
SEND_HIGH = 1024 * 1024
CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    state: DeviceState
    message: str
    exit_code: int | None = None
    log_tail: str = ""
    rolled_back: bool = False


#: Records a step of a device: its state, a message, and the audit action (if audited).
Report = Callable[[RolloutDevice, DeviceState, str, str | None], Awaitable[None]]


class DeviceDelivery(TechnicianLeg):
    """Delivers one rollout's package to one device and waits for its result."""

    via = "update"

    def __init__(
        self,
        broker: Broker,
        rollout: Rollout,
        device: RolloutDevice,
        user: User,
        package: Path,
        progress: Report,
    ) -> None:
        self.broker = broker
        self.rollout = rollout
        self.device = device
        self.user = user
        self.package = package
        self._report = progress
        self.session: Session | None = None
        self.outcome: Outcome | None = None
        self.awaiting_report = False  # an agent update: installed, restarting
        self._decided = asyncio.Event()
        self._finished = asyncio.Event()
        self._wake = asyncio.Event()
        self._outstanding = 0
        self._sender: asyncio.Task[None] | None = None
        self._scope: asyncio.Timeout | None = None

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        rollout = self.rollout
        params = {
            "package": rollout.package_name,
            "version": rollout.package_version,
            "size": str(rollout.size),
            "downgrade": "1" if rollout.downgrade else "0",
            "timeout": f"{rollout.timeout:g}",
            "rollout": rollout.id,
        }
        reason = rollout.reason or f"update {rollout.package_name} to {rollout.package_version}"
        deadline = rollout.timeout + MARGIN
        try:
            async with asyncio.timeout(deadline) as self._scope:
                await self.broker.request(
                    self.user, self.device.device_id, SessionKind.UPDATE, reason, params, self
                )
                await self._finished.wait()
        except TimeoutError:
            self._finish(
                Outcome(DeviceState.FAILED, f"no result from the device within {deadline:g} s")
            )
            await self._end_session()
        finally:
            if self._sender is not None:
                self._sender.cancel()
        assert self.outcome is not None
        return self.outcome

    async def _progress(
        self, device: RolloutDevice, state: DeviceState, message: str, action: str | None = None
    ) -> None:
        """Record a step. Never raises: this runs inside the broker's handling of the
        agent's connection, which a failure here must not take down."""
        try:
            await self._report(device, state, message, action)
        except Exception:
            log.exception("rollout %s: could not record a step", self.rollout.id)

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is None or self.awaiting_report:
            self.outcome = outcome
            self.awaiting_report = False
            self._finished.set()

    async def _end_session(self) -> None:
        session = self.session
        if session is not None and not session.ended:
            await self.broker.tech_closed(session)

    async def cancel(self, why: str) -> None:
        self._finish(Outcome(DeviceState.FAILED, why))
        await self._end_session()

    def agent_report(self, report: AgentUpdateReport) -> None:
        """The agent's verdict on its own update (on its connection, after a restart)."""
        if not self.awaiting_report:
            return
        installed = self.outcome  # the install step's exit status and log
        log_tail = installed.log_tail if installed is not None else ""
        exit_code = installed.exit_code if installed is not None else None
        if report.outcome == "healthy" and report.version == self.rollout.package_version:
            self._finish(
                Outcome(DeviceState.SUCCEEDED, report.message or "healthy", exit_code, log_tail)
            )
        else:
            self._finish(
                Outcome(
                    DeviceState.FAILED,
                    report.message or f"agent update rolled back ({report.outcome})",
                    exit_code,
                    log_tail,
                    rolled_back=report.outcome == "rolled-back",
                )
            )

    # -- sending the package -------------------------------------------------------------------

    async def _send_package(self, session: Session) -> None:
        try:
            with open(self.package, "rb") as stream:  # noqa: ASYNC230 - reads go to a thread
                while not session.ended:
                    if self._outstanding >= SEND_HIGH:
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    chunk = await asyncio.to_thread(stream.read, CHUNK)
                    if not chunk:
                        return
                    self._outstanding += len(chunk)
                    await self.broker.tech_data(session, chunk)
        except OSError as exc:
            log.warning("rollout %s: cannot read the package: %s", self.rollout.id, exc)
            self._finish(Outcome(DeviceState.FAILED, "the relay could not read the package"))
            await self._end_session()

    # -- the broker's side (TechnicianLeg) -------------------------------------------------------

    def credit(self) -> int:
        return SEND_HIGH

    async def waiting(self, session: Session) -> None:
        self.session = session
        self.device.session = session.id
        await self._progress(
            self.device, DeviceState.SENT, "waiting for the device's consent", "update.sent"
        )

    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        if session is None and not self.broker.relay.presence.is_online(self.device.device_id):
            # it went offline between the rollout's look and the request: not a failure
            self._finish(Outcome(DeviceState.PENDING, "offline: sent when it returns"))
            return
        if code == ErrorCode.CONSENT_DENIED:
            text = f"consent denied on the device: {message}"
        else:
            text = f"refused: {message}"
        self._finish(Outcome(DeviceState.FAILED, text))

    async def opened(self, session: Session) -> None:
        self.session = session
        await self.broker.tech_accepted(session)
        await self._progress(self.device, DeviceState.SENT, "sending the package")
        self._sender = asyncio.create_task(self._send_package(session))

    async def send(self, data: bytes) -> None:
        return None  # an update channel carries nothing from the device but messages

    async def consumed(self, size: int) -> None:
        self._outstanding = max(0, self._outstanding - size)
        self._wake.set()

    async def message(self, message: Message) -> None:
        if isinstance(message, UpdateProgress):
            if message.step == UpdateStep.INSTALLING:
                await self._progress(
                    self.device, DeviceState.INSTALLING, message.message, "update.installing"
                )
            elif message.step == UpdateStep.VERIFIED:
                text = f"verified: {message.message}"
                await self._progress(self.device, DeviceState.SENT, text, "update.verified")
            else:
                await self._progress(self.device, DeviceState.SENT, message.step)
        elif isinstance(message, UpdateResult) and self.outcome is None:
            exit_code = message.exit_code if message.exit_code >= 0 else None
            if message.outcome == UpdateOutcome.SUCCEEDED:
                self._finish(
                    Outcome(DeviceState.SUCCEEDED, message.message, exit_code, message.log_tail)
                )
            elif message.outcome == UpdateOutcome.RESTARTING:
                self.outcome = Outcome(
                    DeviceState.INSTALLING, message.message, exit_code, message.log_tail
                )
                self.awaiting_report = True
                if self._scope is not None:  # the new version gets the same time again
                    loop = asyncio.get_running_loop()
                    self._scope.reschedule(loop.time() + self.rollout.timeout + MARGIN)
                await self._progress(
                    self.device, DeviceState.INSTALLING, message.message, "update.restarting"
                )
            else:
                text = message.message
                if message.outcome == UpdateOutcome.REFUSED:
                    text = f"refused by the device: {text}"
                self._finish(Outcome(DeviceState.FAILED, text, exit_code, message.log_tail))

    async def exit_status(self, code: int, signal: str) -> None:
        return None

    async def eof(self) -> None:
        return None

    async def close(self, code: int, message: str) -> None:
        if self.outcome is not None:
            if not self.awaiting_report:
                self._finished.set()
            return
        if code == EndCode.AGENT_LOST:
            text = "the device went offline during the update (result unknown)"
        else:
            text = f"the update session ended without a result: {message}"
        self._finish(Outcome(DeviceState.FAILED, text))
