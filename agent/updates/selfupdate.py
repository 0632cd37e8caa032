"""The agent's own update: install a new version beside the old one, hand over to the
supervisor, and report how it went.

Layout under ``CONFIG/updates/agent/`` (shared with :mod:`agent.updates.supervisor`):

* ``versions/VERSION/``: one agent code tree per installed version (the verified
  payload of an ``agent`` package, its install command run inside it);
* ``state.json``: ``current`` (a version, or null for the agent the supervisor was
  installed with), ``previous``, and ``pending`` (the version to try next);
* ``healthy``: written by a version on trial once it is connected to the relay;
* ``report.json``: what the next connected agent tells the relay (the supervisor writes
  a ``rolled-back`` one when a trial fails).

Only an agent started by ``helpline-agent supervise`` (it sets ``HELPLINE_SUPERVISED``)
can update itself: without a supervisor nobody would restore the old version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.packages import PackageError, PackageHeader, compare_versions

from ..config import AgentConfig
from ..inventory import AGENT_VERSION
from .install import InstallRun, run_install

SUPERVISED_ENV = "HELPLINE_SUPERVISED"
TRIAL_ENV = "HELPLINE_AGENT_TRIAL"


class SelfUpdateError(PackageError):
    pass


def agent_root(config: AgentConfig) -> Path:
    return config.updates_dir / "agent"


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically, 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(value, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@dataclass
class SelfUpdate:
    config: AgentConfig
    root: Path
    pending: dict[str, Any] | None = None

    @classmethod
    def from_environment(cls, config: AgentConfig) -> SelfUpdate:
        if os.environ.get(SUPERVISED_ENV) != "1":
            raise SelfUpdateError(
                "this agent does not run under 'helpline-agent supervise', so it cannot"
                " update itself (nothing would restore it if the new version failed)"
            )
        return cls(config, agent_root(config))

    async def install(
        self,
        header: PackageHeader,
        payload: Path,
        session: str,
        seconds: float,
        *,
        downgrade: bool = False,
    ) -> InstallRun:
        manifest = header.manifest
        order = compare_versions(manifest.version, AGENT_VERSION)
        if order == 0 or (order < 0 and not downgrade):
            raise SelfUpdateError(
                f"agent {manifest.version} is not newer than the running {AGENT_VERSION}"
                + ("" if order == 0 else " (push it as a deliberate downgrade to allow this)")
            )
        state = read_json(self.root / "state.json")
        if state.get("pending"):
            raise SelfUpdateError("another agent update is already being tried")
        versions = self.root / "versions"
        versions.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = versions / manifest.version
        if target.exists():
            shutil.rmtree(target)
        os.replace(payload, target)  # same file system: updates/tmp -> updates/agent
        env = {
            **os.environ,
            "HELPLINE_PACKAGE_NAME": manifest.name,
            "HELPLINE_PACKAGE_VERSION": manifest.version,
            "HELPLINE_PACKAGE_DIR": str(target),
        }
        log_path = target.parent / f".{manifest.version}.install.log"
        run = await run_install(manifest.install, target, env, seconds, log_path)
        if run.exit_code == 0 and not run.timed_out and not run.error:
            self.pending = {
                "version": manifest.version,
                "package": manifest.name,
                "session": session,
                "previous": state.get("current"),
                "requested_at": time.time(),
            }
        return run

    def request_switch(self) -> None:
        """Record the pending version and stop: the supervisor starts the new one."""
        if self.pending is None:
            return
        state = read_json(self.root / "state.json")
        state["pending"] = self.pending
        (self.root / "healthy").unlink(missing_ok=True)
        write_json(self.root / "state.json", state)
        os.kill(os.getpid(), signal.SIGTERM)  # a graceful stop, as on any shutdown


def trial_version() -> str | None:
    """The version this process runs on trial, if the supervisor started it as one."""
    return os.environ.get(TRIAL_ENV) or None


def pending_report(config: AgentConfig) -> dict[str, Any] | None:
    """What this agent should tell the relay about an agent update, once connected."""
    root = agent_root(config)
    trial = trial_version()
    if trial is not None:
        pending = read_json(root / "state.json").get("pending") or {}
        if pending.get("version") == trial:
            return {
                "session": str(pending.get("session", "")),
                "package": str(pending.get("package", "")),
                "version": trial,
                "outcome": "healthy",
                "message": f"agent {trial} connected and healthy",
            }
    report = read_json(root / "report.json")
    return report or None


def report_sent(config: AgentConfig, report: dict[str, Any]) -> None:
    """The relay has the report: a trial is healthy (the supervisor commits it), a
    rollback report is not sent twice."""
    root = agent_root(config)
    if report.get("outcome") == "healthy":
        (root / "healthy").write_text(str(report["version"]))
    else:
        (root / "report.json").unlink(missing_ok=True)
