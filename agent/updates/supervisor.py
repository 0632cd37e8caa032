"""``helpline-agent supervise``: run the agent, switch to a new version, roll back.

The supervisor is the stable part of an agent installation (a service manager starts it
instead of ``helpline-agent run``). It runs the current agent version as a child:

* the version the supervisor was installed with (``current`` is null), or
* an installed update, ``CONFIG/updates/agent/versions/VERSION``: a code tree put first
  on the child's ``PYTHONPATH`` (or, when it holds ``bin/python``, its own interpreter).

When an update was installed (:mod:`agent.updates.selfupdate`), the running agent
records it as ``pending`` and stops. The supervisor starts the pending version on trial.
If it connects to the relay and writes ``healthy`` within ``health_deadline`` seconds,
it becomes ``current``. If not (it crashed, hung, or never reached the relay), it is
killed, the previous version is started again, and a ``rolled-back`` report waits in
``report.json`` for that version to give the relay once connected.

A child that exits on its own (a crash) is started again after a short pause.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from ..config import AgentConfig
from .selfupdate import SUPERVISED_ENV, TRIAL_ENV, agent_root, read_json, write_json

log = logging.getLogger("helpline.agent.supervisor")

#: Seconds between looks at the child and the health marker.
POLL = 0.2
#: Pause before restarting a child that exited on its own, and the longest it grows to.
RESTART_PAUSE = 1.0
MAX_RESTART_PAUSE = 30.0
#: Seconds a child gets to stop after SIGTERM before SIGKILL.
STOP_GRACE = 10.0


class Supervisor:
    def __init__(self, config: AgentConfig, *, verbose: bool = False) -> None:
        self.config = config
        self.root = agent_root(config)
        self.verbose = verbose
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    # -- children ---------------------------------------------------------------------------

    def _start(self, version: str | None, *, trial: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, SUPERVISED_ENV: "1"}
        env.pop(TRIAL_ENV, None)
        python = sys.executable
        cwd = self.config.directory
        if version is not None:
            tree = self.root / "versions" / version
            own = tree / "bin" / "python"
            python = str(own) if own.exists() else python
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p
            )
            cwd = tree
        if trial and version is not None:
            env[TRIAL_ENV] = version
        argv = [python, "-m", "agent.cli"]
        if self.verbose:
            argv.append("-v")
        argv += ["run", "--config", str(self.config.directory.resolve())]
        log.info("starting agent %s%s", version or "(installed)", " on trial" if trial else "")
        return subprocess.Popen(argv, cwd=cwd, env=env)

    def _stop_child(self) -> int | None:
        child = self.child
        if child is None:
            return None
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        self.child = None
        return child.returncode

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        pause = RESTART_PAUSE
        try:
            while not self.stopping:
                state = read_json(self.root / "state.json")
                pending = state.get("pending")
                if pending:
                    self._try(state, pending)
                else:
                    self.child = self._start(_version(state.get("current")))
                started = time.monotonic()
                while not self.stopping and self.child is not None and self.child.poll() is None:
                    time.sleep(POLL)
                if self.stopping:
                    break
                code = self.child.returncode if self.child is not None else None
                self.child = None
                if read_json(self.root / "state.json").get("pending"):
                    pause = RESTART_PAUSE
                    continue  # the agent stopped to hand over to a new version
                log.warning("agent exited (status %s); restarting in %.0f s", code, pause)
                if time.monotonic() - started > MAX_RESTART_PAUSE:
                    pause = RESTART_PAUSE
                self._sleep(pause)
                pause = min(pause * 2, MAX_RESTART_PAUSE)
        finally:
            self._stop_child()
        return 0

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(POLL)

    def _try(self, state: dict[str, object], pending: object) -> None:
        """Start the pending version; keep it if it reports healthy in time, else restore."""
        assert isinstance(pending, dict)
        version = str(pending.get("version", ""))
        marker = self.root / "healthy"
        marker.unlink(missing_ok=True)
        self.child = self._start(version, trial=True)
        deadline = time.monotonic() + self.config.health_deadline
        why = f"did not connect and report healthy within {self.config.health_deadline:g} s"
        while time.monotonic() < deadline and not self.stopping:
            if _read(marker) == version:
                state["previous"] = state.get("current")
                state["current"] = version
                state["pending"] = None
                write_json(self.root / "state.json", state)
                log.info("agent %s is healthy: it is now the current version", version)
                return
            code = self.child.poll()
            if code is not None:
                why = f"exited with status {code} before it reported healthy"
                break
            time.sleep(POLL)
        if self.stopping:
            return
        self._stop_child()
        restored = state.get("current") or "the installed agent"
        state["pending"] = None
        write_json(self.root / "state.json", state)
        write_json(
            self.root / "report.json",
            {
                "session": str(pending.get("session", "")),
                "package": str(pending.get("package", "")),
                "version": version,
                "outcome": "rolled-back",
                "message": f"agent {version} {why}: rolled back to {restored}",
            },
        )
        log.warning("agent %s %s: rolling back to %s", version, why, restored)
        self.child = self._start(_version(state.get("current")))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _version(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
