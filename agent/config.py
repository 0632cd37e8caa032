"""The agent's configuration: ``CONFIG/agent.toml`` with documented defaults.

Beside it in the same directory: ``agent.key`` (0600), ``agent.pem`` (the
client certificate the relay signed) and ``ca.pem`` (the relay CA, pinned at
enrolment by fingerprint).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE = """\
# Helpline agent configuration. Every key is shown with its default value.

[relay]
# The relay this agent enrolled with, and the identity the relay gave it.
url = "{url}"
device_id = "{device_id}"
name = "{name}"

[connection]
# Seconds between heartbeats; the relay drops an agent silent for three of them.
heartbeat_interval = 30.0
# Reconnection waits a random time in [0, min(backoff_max, backoff_initial * 2^attempt)]
# seconds ("full jitter"), so agents do not all return in the same second after a relay restart.
backoff_initial = 1.0
backoff_max = 60.0

[consent]
# What happens when a technician asks for a session, per kind:
#   "prompt": ask the logged-in user (denied when nobody answers in time, or nobody is there);
#   "notify": allow, and show the user a notice with an End button;
#   "allow":  allow silently (unattended machines).
shell = "prompt"
view = "prompt"
control = "prompt"
files = "prompt"
update = "notify"
# Seconds the user has to answer a prompt.
prompt_timeout = 30.0

[shell]
# The program shell sessions run; empty means the agent user's login shell.
program = ""

[files]
# Directories file transfers may touch; empty means the agent user's home directory.
roots = []

[updates]
# Publisher public keys (PEM files; relative paths are in this directory) whose signed
# packages this agent installs. Only this machine's administrator sets them (at enrolment
# with --publisher-key, or here): the relay cannot add one. No key: no package installs.
publisher_keys = {publisher_keys}
# Seconds an install command may run before it is killed and reported as timed out.
install_timeout = 600.0
# Largest package file accepted, in bytes.
max_package_size = 268435456
# Whether a push marked as a deliberate downgrade may install an older signed version.
# false: versions only ever move forward here, whoever pushes (a compromised relay cannot
# roll this machine back to an old, signed but vulnerable version).
accept_downgrades = true
# Seconds a new agent version has to connect and report healthy before the supervisor
# (helpline-agent supervise) restores the previous one.
health_deadline = 60.0
"""

POLICIES = frozenset({"prompt", "notify", "allow"})
SESSION_KINDS = ("shell", "view", "control", "files", "update")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AgentConfig:
    directory: Path
    url: str
    device_id: str
    name: str
    heartbeat_interval: float = 30.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    consent: dict[str, str] = field(default_factory=dict)
    prompt_timeout: float = 30.0
    file_roots: tuple[str, ...] = ()
    shell: str = ""
    publisher_keys: tuple[str, ...] = ()
    install_timeout: float = 600.0
    max_package_size: int = 256 * 1024 * 1024
    health_deadline: float = 60.0
    accept_downgrades: bool = True

    @property
    def updates_dir(self) -> Path:
        return self.directory / "updates"

    def publisher_key_paths(self) -> list[Path]:
        return [self.directory / p for p in self.publisher_keys]

    @property
    def key_file(self) -> Path:
        return self.directory / "agent.key"

    @property
    def cert_file(self) -> Path:
        return self.directory / "agent.pem"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"


def _number(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key} must be a positive number")
    return float(value)


def load_config(directory: Path) -> AgentConfig:
    path = directory / "agent.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; enrol first with 'helpline-agent enroll'") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    relay = raw.get("relay", {})
    connection = raw.get("connection", {})
    consent_section = dict(raw.get("consent", {}))
    prompt_timeout = _number(consent_section, "prompt_timeout", 30.0)
    consent_section.pop("prompt_timeout", None)
    consent = {
        "shell": "prompt",
        "view": "prompt",
        "control": "prompt",
        "files": "prompt",
        "update": "notify",
    }
    for kind, policy in consent_section.items():
        if kind not in SESSION_KINDS or policy not in POLICIES:
            raise ConfigError(f"{path}: [consent] {kind} = {policy!r} is not valid")
        consent[kind] = policy
    shell = raw.get("shell", {}).get("program", "")
    if not isinstance(shell, str):
        raise ConfigError(f"{path}: [shell] program must be a path")
    roots = raw.get("files", {}).get("roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise ConfigError(f"{path}: [files] roots must be a list of paths")
    for root in roots:
        if not root.startswith(("/", "~")) or "\0" in root:
            raise ConfigError(f"{path}: [files] roots must be absolute paths, not {root!r}")
    updates = raw.get("updates", {})
    keys = updates.get("publisher_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"{path}: [updates] publisher_keys must be a list of file paths")
    accept_downgrades = updates.get("accept_downgrades", True)
    if not isinstance(accept_downgrades, bool):
        raise ConfigError(f"{path}: [updates] accept_downgrades must be true or false")
    try:
        return AgentConfig(
            directory=directory,
            url=str(relay["url"]),
            device_id=str(relay["device_id"]),
            name=str(relay["name"]),
            heartbeat_interval=_number(connection, "heartbeat_interval", 30.0),
            backoff_initial=_number(connection, "backoff_initial", 1.0),
            backoff_max=_number(connection, "backoff_max", 60.0),
            consent=consent,
            prompt_timeout=prompt_timeout,
            file_roots=tuple(roots),
            shell=shell,
            publisher_keys=tuple(keys),
            install_timeout=_number(updates, "install_timeout", 600.0),
            max_package_size=int(_number(updates, "max_package_size", 256 * 1024 * 1024)),
            health_deadline=_number(updates, "health_deadline", 60.0),
            accept_downgrades=accept_downgrades,
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: [relay] {exc.args[0]} is missing") from None
