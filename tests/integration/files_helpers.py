"""Helpers for the file-transfer tests: agents confined to a fresh directory (never the
real home), optionally run as an unprivileged user so permission bits really apply, the
``helpline files`` CLI, the audit trail of a transfer, and files of random bytes."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from protocol import ChannelData, ChannelOpened, Event, Hello, Limits
from protocol.frames import FrameKind
from protocol.messages import Goodbye, decode_message
from protocol.sessions import SessionRequest

from .conftest import BIN, AgentProcess, RelayProcess, enroll_agent, run_helpline, wait_for
from .helpers import RawLink, cli_login, rest

ALLOW = {"files": "allow"}
PARTIAL_SUFFIX = ".helpline-partial"
#: The account the permission tests run the agent as (when the tests run as root).
UNPRIVILEGED = "nobody"
REPO = Path(__file__).resolve().parents[2]


# -- files ------------------------------------------------------------------------------------


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_random(path: Path, size: int, seed: int, *, mode: int = 0o644) -> bytes:
    data = random_bytes(size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return data


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def partial_of(path: Path) -> Path:
    """Where a transfer into ``path`` keeps its bytes until verified (both ends)."""
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def snapshot(directory: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Everything under ``directory``: relative path -> (kind, mode, content or link target)."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        relative = str(path.relative_to(directory))
        if path.is_symlink():
            found[relative] = ("link", info.st_mode & 0o7777, os.readlink(path))
        elif path.is_dir():
            found[relative] = ("dir", info.st_mode & 0o7777, b"")
        else:
            found[relative] = ("file", info.st_mode & 0o7777, path.read_bytes())
    return found


def partials_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob(f"*{PARTIAL_SUFFIX}"))


def flock_free(path: Path) -> bool:
    """Nobody holds the agent's transfer lock on ``path`` (a partial upload) any more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases the probe's lock
    return True


# -- agents confined to one directory ---------------------------------------------------------


def set_roots(config_dir: Path, roots: list[Path]) -> None:
    """``[files] roots = [...]`` in the agent's agent.toml (before it starts)."""
    path = config_dir / "agent.toml"
    text = path.read_text()
    assert "\nroots = []\n" in text, text
    listed = ", ".join(json.dumps(str(root)) for root in roots)  # TOML basic strings
    path.write_text(text.replace("\nroots = []\n", f"\nroots = [{listed}]\n"))


def headless_env() -> dict[str, str]:
    """Nobody at the machine: no display, so a "prompt" policy has no one to ask."""
    hidden = ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")
    return {k: v for k, v in os.environ.items() if k not in hidden}


def enrol_confined(
    relay: RelayProcess,
    directory: Path,
    name: str,
    root: Path,
    *,
    consent: dict[str, str] | None = None,
) -> AgentProcess:
    """Enrol an agent whose only allowed root is ``root`` (not started)."""
    root.mkdir(parents=True, exist_ok=True)
    agent = enroll_agent(relay, directory, name, consent=ALLOW if consent is None else consent)
    set_roots(agent.config_dir, [root])
    return agent


def start_headless(agent: AgentProcess, *, user: str | None = None) -> None:
    """Start ``agent`` with no display and stdin not a terminal; as ``user`` if given."""
    argv: list[str | Path] = [BIN / "helpline-agent", "-v", "run", "--config", agent.config_dir]
    env = headless_env()
    kwargs: dict[str, Any] = {}
    if user is not None:
        account = pwd.getpwnam(user)
        interpreter = interpreter_for(user)
        script = "import sys; from agent.cli import main; sys.exit(main())"
        argv = [interpreter, "-c", script, "-v", "run", "--config", agent.config_dir]
        env["PYTHONPATH"] = _import_path()
        env["HOME"] = account.pw_dir
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        _give(agent.config_dir, account)
    with agent.log_path.open("ab") as log:
        agent.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            **kwargs,
        )


def process_uid(process: subprocess.Popen[bytes]) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _give(path: Path, account: pwd.struct_passwd) -> None:
    for item in [path, *path.rglob("*")]:
        os.chown(item, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _import_path() -> str:
    return os.pathsep.join(str(path) for path in _readable_code())


@functools.cache
def _readable_code() -> tuple[Path, ...]:
    """The agent's code and its dependencies where any user can read them.

    The clone (and its venv) may sit below a directory only root may enter, so they are
    mirrored once into a world-readable temporary directory: hard links where the
    filesystem allows (no copy), copies otherwise. Removed when the test run ends.
    """
    mirror = Path(tempfile.mkdtemp(prefix="helpline-readable-"))
    mirror.chmod(0o755)
    atexit.register(shutil.rmtree, mirror, True)

    def link_or_copy(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    code = mirror / "code"
    code.mkdir(mode=0o755)
    for package in ("protocol", "certs", "agent"):
        shutil.copytree(
            REPO / package,
            code / package,
            copy_function=link_or_copy,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    paths = [code]
    for number, site in enumerate(p for p in sys.path if p.endswith("site-packages")):
        if Path(site).is_dir():
            target = mirror / f"site-{number}"
            shutil.copytree(
                site,
                target,
                copy_function=link_or_copy,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            paths.append(target)
    for directory in mirror.rglob("*"):
        if directory.is_dir() and not directory.is_symlink():
            directory.chmod(0o755)
    return tuple(paths)


@functools.cache
def interpreter_for(user: str) -> str:
    """A Python the unprivileged ``user`` may run that imports the agent and its
    dependencies (this one may live in root's 0700 home, so the system Python of the same
    version is the fallback)."""
    account = pwd.getpwnam(user)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(version), f"/usr/bin/{version}"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": _import_path(), "HOME": account.pw_dir}
    check = "import agent.cli, aiohttp, cryptography, msgpack"
    for candidate in dict.fromkeys(c for c in candidates if c):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(
                [candidate, "-c", check],
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=[],
                env=env,
                capture_output=True,
                check=False,
                timeout=30,
                cwd="/",
            )
            if result.returncode == 0:
                return candidate
    raise AssertionError(
        f"no Python interpreter that {user!r} can run imports the agent "
        "(install Debian's python3 beside the venv's)"
    )


@contextlib.contextmanager
def unprivileged_dir(user: str) -> Iterator[Path]:
    """A fresh directory owned by ``user`` that ``user`` can reach (pytest's own tmp dirs
    are private to root), removed afterwards."""
    account = pwd.getpwnam(user)
    directory = Path(tempfile.mkdtemp(prefix="helpline-files-"))
    os.chown(directory, account.pw_uid, account.pw_gid)
    try:
        yield directory
    finally:
        for path in [directory, *directory.rglob("*")]:  # make everything removable again
            if not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(directory)


# -- a console spoken by hand (connect with helpers.raw_console_link) --------------------


async def flush(link: RawLink) -> None:
    for frame in link.conn.data_to_send():
        await link.ws.send_bytes(frame)


async def until(link: RawLink, wanted: Callable[[Event], bool], within: float = 20.0) -> Event:
    """Feed what the relay sends to our Connection until an event ``wanted`` accepts."""
    async with asyncio.timeout(within):
        while True:
            message = await link.ws.receive()
            assert message.type is aiohttp.WSMsgType.BINARY, f"the relay closed: {message!r}"
            link.conn.receive_data(message.data)
            for event in link.conn.events_received():
                if wanted(event):
                    return event
            await flush(link)


async def closed_with(link: RawLink, within: float = 20.0) -> tuple[int | None, list[Goodbye]]:
    """Read (and drop data) until the relay closes the WebSocket: its close code and the
    Goodbye messages it sent first."""
    goodbyes: list[Goodbye] = []
    async with asyncio.timeout(within):
        while True:
            message = await link.ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                return link.ws.close_code, goodbyes
            for frame in link.parser.feed(message.data):
                if frame.kind is FrameKind.CONTROL:
                    decoded = decode_message(frame.body, Limits())
                    if isinstance(decoded, Goodbye):
                        goodbyes.append(decoded)


async def open_files_session(link: RawLink, device: str) -> ChannelOpened:
    """Hello, ask for a files session on ``device``, accept the channel the relay opens."""
    await flush(link)  # our Hello
    await until(link, lambda e: isinstance(e, Hello))
    link.conn.send(SessionRequest(request=1, device=device, kind="files"))
    await flush(link)
    opened = await until(link, lambda e: isinstance(e, ChannelOpened))
    assert isinstance(opened, ChannelOpened)
    link.conn.accept_channel(opened.channel)
    await flush(link)
    return opened


async def take_one_window(link: RawLink, channel: int) -> int:
    """Receive data on ``channel`` until our whole window is used, acknowledging none."""
    received = [0]

    def window_used(event: Event) -> bool:
        if isinstance(event, ChannelData) and event.channel == channel:
            received[0] += len(event.data)
        return received[0] >= link.conn.limits.channel_window

    await until(link, window_used)
    return received[0]


# -- the CLI and the relay's view ------------------------------------------------------------


@dataclass
class Console:
    """The first admin's logged-in ``helpline`` CLI against ``relay``."""

    relay: RelayProcess
    config: Path

    @classmethod
    def login(cls, relay: RelayProcess, config: Path, otp: str) -> Console:
        admin = relay.admin
        cli_login(relay, config, admin["username"], admin["password"], otp)
        return cls(relay, config)

    @property
    def token(self) -> str:
        return str(json.loads((self.config / "credentials.json").read_text())["token"])

    def files(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run_helpline(self.config, "files", *map(str, args))

    def ok(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        result = self.files(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def refused(self, *args: str | Path) -> str:
        """Run a command that must fail; its one-line error."""
        result = self.files(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("helpline: ")]
        assert lines, result.stderr
        return lines[-1]

    def refused_all(self, *commands: tuple[str | Path, ...]) -> list[str]:
        """:meth:`refused` for each command, several at a time (each its own session)."""
        with ThreadPoolExecutor(max_workers=6) as pool:
            return list(pool.map(lambda args: self.refused(*args), commands))

    def audit(self, action: str) -> list[dict[str, Any]]:
        query = urlencode({"action": action, "limit": 5000})
        status, body = rest(self.relay, "GET", f"/api/v1/audit?{query}", token=self.token)
        assert status == 200, body
        return list(body["entries"])

    def transfers(self, path: str) -> list[dict[str, Any]]:
        """``file.transfer`` entries for the device path ``path``, oldest first."""
        return [e for e in self.audit("file.transfer") if e["details"].get("path") == path]

    def devices_online(self) -> dict[str, bool]:
        status, body = rest(self.relay, "GET", "/api/v1/devices", token=self.token)
        assert status == 200, body
        return {d["name"]: d["online"] for d in body["devices"]}

    def wait_online(self, name: str) -> None:
        wait_for(lambda: self.devices_online().get(name, False), what=f"{name} online")

    def wait_offline(self, name: str) -> None:
        wait_for(lambda: not self.devices_online().get(name, True), what=f"{name} offline")


def summary_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a transfer prints on a non-terminal; stderr has no progress drawing,
    only the status line the session request printed while the device decided."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    for line in result.stderr.splitlines():
        assert line.startswith("helpline: waiting for consent on "), result.stderr
    for output in (result.stdout, result.stderr):
        assert "\r" not in output and "\x1b" not in output, output
    return lines[0]
