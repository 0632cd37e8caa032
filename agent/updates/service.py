"""One ``update`` channel on the agent: receive the package, verify, install, report.

By the time this runs the customer's consent policy for ``update`` has granted the
session (:mod:`agent.sessions`). Then:

1. the package file arrives as the channel's data, into a private temporary directory
   (``CONFIG/updates/tmp/SESSION``, 0700), never more than the size the relay announced
   nor than ``max_package_size``;
2. it is verified against the publisher keys pinned in ``agent.toml``
   (:func:`certs.packages.verify_package`: signature, then payload size and SHA-256),
   checked to be the package the relay announced, for this platform, and newer than
   what is installed under its name (unless the push is a deliberate downgrade);
3. only then is the payload unpacked (still inside the temporary directory) and the
   signed install command run there with a timeout;
4. the result (outcome, exit status, the install log's tail) goes back as
   :class:`~protocol.updates.UpdateResult`, and the channel closes.

Nothing the relay says is trusted beyond the bytes it delivers: the package names
itself, and only a pinned key makes it installable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from certs.packages import (
    MAGIC,
    PackageError,
    PackageHeader,
    PublisherKeys,
    extract_payload,
    verify_package,
)
from protocol import Connection
from protocol.sessions import EndCode, ExitStatus
from protocol.updates import UpdateOutcome, UpdateProgress, UpdateResult, UpdateStep

from ..config import AgentConfig
from .install import run_install
from .selfupdate import SelfUpdate, SelfUpdateError
from .state import InstalledVersions

log = logging.getLogger("helpline.agent.updates")

Flush = Callable[[], Awaitable[None]]

#: One install at a time on this machine, whatever the number of update sessions.
_INSTALL_LOCK = asyncio.Lock()


def platform_matches(platform: str) -> bool:
    return platform == "any" or sys.platform.startswith(platform.split("-", 1)[0])


class UpdateService:
    def __init__(
        self,
        config: AgentConfig,
        conn: Connection,
        channel: int,
        flush: Flush,
        params: dict[str, str],
        session_id: str,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.config = config
        self.conn = conn
        self.channel = channel
        self.flush = flush
        self.session_id = session_id
        self._spawn = spawn
        self.announced_name = params.get("package", "")
        self.announced_version = params.get("version", "")
        # the relay's word is enough only where the machine's administrator allows it
        self.downgrade = params.get("downgrade", "0") == "1" and config.accept_downgrades
        self.rollout = params.get("rollout", "")
        self.timeout = _positive(params.get("timeout"), config.install_timeout)
        self.timeout = min(self.timeout, config.install_timeout)
        self.size = _size(params.get("size"))
        self.workdir = config.updates_dir / "tmp" / _safe(session_id)
        self.spool_path = self.workdir / "package.hlpkg"
        self.received = 0
        self.finished = False
        self._spool: int | None = None

    # -- the channel ----------------------------------------------------------------------

    def problem_before_start(self) -> str | None:
        """Why this update cannot even be received (checked before consent is asked)."""
        if self.size is None or self.size < len(MAGIC):
            return "the relay did not announce a usable package size"
        if self.size > self.config.max_package_size:
            return (
                f"the package ({self.size} bytes) is larger than this agent accepts"
                f" ({self.config.max_package_size} bytes)"
            )
        if not self.config.publisher_keys:
            return "this agent trusts no publisher key: it installs no packages"
        return None

    def open_spool(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, mode=0o700)
        os.chmod(self.workdir.parent, 0o700)
        self._spool = os.open(self.spool_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    async def handle_data(self, data: bytes) -> None:
        if self.finished or self._spool is None or self.size is None:
            self.conn.acknowledge(self.channel, len(data))
            return
        if self.received + len(data) > self.size:
            await self.finish(UpdateOutcome.REFUSED, "the relay sent more than it announced")
            return
        await asyncio.to_thread(_write_all, self._spool, data)
        self.received += len(data)
        self.conn.acknowledge(self.channel, len(data))
        await self.flush()
        if self.received == self.size:
            os.close(self._spool)
            self._spool = None
            self._spawn(self._process())

    async def close(self) -> None:
        """The channel is gone: drop the temporary directory."""
        self.finished = True
        if self._spool is not None:
            os.close(self._spool)
            self._spool = None
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)

    # -- the work ----------------------------------------------------------------------

    async def _progress(self, step: UpdateStep, message: str = "") -> None:
        if not self.finished:
            self.conn.send_channel_message(self.channel, UpdateProgress(step=step, message=message))
            await self.flush()

    async def _process(self) -> None:
        try:
            await self._progress(UpdateStep.RECEIVED, f"{self.received} bytes")
            header = await asyncio.to_thread(self._verify)
            manifest = header.manifest
            await self._progress(
                UpdateStep.VERIFIED, f"{manifest.name} {manifest.version} signed by {header.signer}"
            )
            async with _INSTALL_LOCK:
                InstalledVersions(self.config.updates_dir / "installed.json").check_forward(
                    manifest.name, manifest.version, downgrade=self.downgrade
                )
                payload = self.workdir / "payload"
                payload.mkdir(mode=0o700)
                await asyncio.to_thread(extract_payload, self.spool_path, header, payload)
                if manifest.kind == "agent":
                    await self._agent_update(header, payload)
                    return
                await self._install(header, payload)
        except PackageError as refused:
            log.warning("update %s refused: %s", self.session_id, refused)
            await self.finish(UpdateOutcome.REFUSED, str(refused))
        except OSError as exc:
            log.warning("update %s failed: %s", self.session_id, exc)
            await self.finish(
                UpdateOutcome.FAILED, f"the agent could not prepare the install: {exc}"
            )

    def _verify(self) -> PackageHeader:
        trusted = PublisherKeys.from_pem_files(self.config.publisher_key_paths())
        header = verify_package(self.spool_path, trusted)
        manifest = header.manifest
        if (manifest.name, manifest.version) != (self.announced_name, self.announced_version):
            raise PackageError(
                f"the relay announced {self.announced_name} {self.announced_version}"
                f" but the package is {manifest.name} {manifest.version}"
            )
        if not platform_matches(manifest.platform):
            raise PackageError(f"the package is for {manifest.platform}, not {sys.platform}")
        return header

    async def _install(self, header: PackageHeader, payload: Path) -> None:
        manifest = header.manifest
        await self._progress(UpdateStep.INSTALLING, " ".join(manifest.install)[:1024])
        env = {
            **os.environ,
            "HELPLINE_PACKAGE_NAME": manifest.name,
            "HELPLINE_PACKAGE_VERSION": manifest.version,
            "HELPLINE_PACKAGE_DIR": str(payload),
        }
        log.info("update %s: installing %s %s", self.session_id, manifest.name, manifest.version)
        run = await run_install(
            manifest.install, payload, env, self.timeout, self.workdir / "install.log"
        )
        if run.error:
            await self.finish(UpdateOutcome.FAILED, run.error)
        elif run.timed_out:
            await self.finish(
                UpdateOutcome.TIMEOUT,
                f"the install command ran past its timeout of {self.timeout:g} s and was killed",
                log_tail=run.log_tail,
            )
        elif run.exit_code != 0:
            await self.finish(
                UpdateOutcome.FAILED,
                f"the install command exited with status {run.exit_code}",
                exit_code=run.exit_code,
                log_tail=run.log_tail,
            )
        else:
            InstalledVersions(self.config.updates_dir / "installed.json").record(
                manifest.name, manifest.version, session=self.session_id
            )
            await self.finish(
                UpdateOutcome.SUCCEEDED,
                f"installed {manifest.name} {manifest.version}",
                exit_code=0,
                log_tail=run.log_tail,
                version=manifest.version,
            )

    async def _agent_update(self, header: PackageHeader, payload: Path) -> None:
        try:
            updater = SelfUpdate.from_environment(self.config)
            await self._progress(UpdateStep.INSTALLING, "installing the new agent version")
            run = await updater.install(
                header, payload, self.session_id, self.timeout, downgrade=self.downgrade
            )
        except SelfUpdateError as error:
            await self.finish(UpdateOutcome.REFUSED, str(error))
            return
        if run.timed_out or run.exit_code != 0 or run.error:
            outcome = UpdateOutcome.TIMEOUT if run.timed_out else UpdateOutcome.FAILED
            message = run.error or (
                "the new version's install command ran past its timeout"
                if run.timed_out
                else f"the new version's install command exited with status {run.exit_code}"
            )
            await self.finish(outcome, message, exit_code=run.exit_code, log_tail=run.log_tail)
            return
        manifest = header.manifest
        await self.finish(
            UpdateOutcome.RESTARTING,
            f"agent {manifest.version} installed beside the current one; restarting into it",
            exit_code=0,
            log_tail=run.log_tail,
            version=manifest.version,
        )
        updater.request_switch()

    async def finish(
        self,
        outcome: UpdateOutcome,
        message: str,
        *,
        exit_code: int = -1,
        log_tail: str = "",
        version: str = "",
    ) -> None:
        if self.finished:
            return
        self.finished = True
        result = UpdateResult(
            outcome=outcome,
            exit_code=exit_code,
            message=message[:1024],
            log_tail=log_tail[-4000:],
            version=version,
        )
        try:
            self.conn.send_channel_message(self.channel, result)
            if exit_code >= 0:
                self.conn.send_channel_message(self.channel, ExitStatus(code=exit_code))
            self.conn.close_channel(self.channel, EndCode.NORMAL, f"update {outcome}")
            await self.flush()
        except Exception as exc:  # the relay went away meanwhile: nothing to tell
            log.info("update %s result not delivered: %s", self.session_id, exc)
        log.info("update %s: %s: %s", self.session_id, outcome, message)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _positive(value: str | None, default: float) -> float:
    try:
        number = float(value) if value else default
    except ValueError:
        return default
    return number if number > 0 else default


def _size(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else -1
    except ValueError:
        return None
    return number if number >= 0 else None


def _safe(session_id: str) -> str:
    cleaned = "".join(c for c in session_id if c.isalnum())[:64]
    return cleaned or "session"
