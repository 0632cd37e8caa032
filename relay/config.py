"""The relay's configuration: ``DATA/relay.toml``, its documented defaults, and loading.

``TEMPLATE`` is the file ``helpline-relay init`` writes: every key with its
default and what it means. :func:`load_config` reads it back; an unknown key is
an error (a typo should not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

TEMPLATE = """\
# Helpline relay configuration. Every key is shown with its default value.

[server]
# Address and port for HTTPS, the agents' WSS endpoint and the consoles' WSS endpoint.
listen = "{listen}"
# The URL agents and technicians use to reach this relay (shown in enrol commands).
public_url = "{public_url}"
# Seconds a TLS handshake may take before the connection is dropped.
tls_handshake_timeout = 10.0
# Share one TLS read buffer among all connections instead of asyncio's 256 KiB each
# (see README, "Memory per agent"). Only turn off to measure the difference.
shared_tls_buffer = true

[store]
# Where users, devices and the audit log live. Relative paths are inside the data dir.
url = "sqlite:///relay.db"

[auth]
# Lifetime of a bearer token issued at login, in seconds (12 hours).
token_lifetime = 43200
# Whether new accounts must use a TOTP second factor.
totp_required = true
# Consecutive failed logins before an account is locked...
lockout_threshold = 5
# ...and for how many seconds.
lockout_seconds = 900
# Failed logins from one address within address_window seconds before it is throttled.
address_failures = 20
address_window = 600
# Password checks (argon2id, ~64 MiB each) running at once; 0: one per CPU core...
password_checks = 0
# ...and logins that may wait for one; past that a login is refused as busy (HTTP 429).
password_queue = 32

[agents]
# An agent that sends nothing (heartbeats included) for this many seconds is dropped.
heartbeat_timeout = 90.0
# Largest frame an agent or console may send, in bytes.
max_frame_size = 262144
# Default lifetime and uses of an enrolment token, when the admin gives none.
enrolment_token_lifetime = 86400
enrolment_token_uses = 1
# Validity of an agent certificate, in days.
certificate_days = 825

[ssh]
# The SSH gateway: `ssh -p PORT USER:DEVICE@relay`. Empty turns the gateway off.
listen = "{ssh_listen}"

[recording]
# Record what technicians type in shell sessions too. Off by default: input holds passwords.
record_input = false
# Keep a copy of every file transferred, beside the session's recordings.
keep_files = false
"""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:8443"
    public_url: str = "https://127.0.0.1:8443"
    tls_handshake_timeout: float = 10.0
    shared_tls_buffer: bool = True


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///relay.db"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    token_lifetime: int = 43200
    totp_required: bool = True
    lockout_threshold: int = 5
    lockout_seconds: int = 900
    address_failures: int = 20
    address_window: int = 600
    password_checks: int = 0
    password_queue: int = 32


@dataclass(frozen=True, slots=True)
class AgentsConfig:
    heartbeat_timeout: float = 90.0
    max_frame_size: int = 262144
    enrolment_token_lifetime: int = 86400
    enrolment_token_uses: int = 1
    certificate_days: int = 825


@dataclass(frozen=True, slots=True)
class SshConfig:
    listen: str = "127.0.0.1:2222"


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    record_input: bool = False
    keep_files: bool = False


@dataclass(frozen=True, slots=True)
class RelayConfig:
    data_dir: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)

    @property
    def store_url(self) -> str:
        url = self.store.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return f"sqlite:///{self.data_dir / url.removeprefix('sqlite:///')}"
        return url


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "store": StoreConfig,
    "auth": AuthConfig,
    "agents": AgentsConfig,
    "ssh": SshConfig,
    "recording": RecordingConfig,
}


class ConfigError(ValueError):
    """relay.toml is unreadable or holds an unknown key or a wrong type."""


def load_config(data_dir: Path) -> RelayConfig:
    path = data_dir / "relay.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found; run 'helpline-relay init --data {data_dir}'"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        cls = _SECTIONS.get(name)
        if cls is None or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{name}]")
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r} in [{name}]")
            default = getattr(cls(), key)
            if isinstance(default, float) and isinstance(value, int):
                values[key] = float(value)
            elif type(value) is not type(default):
                raise ConfigError(f"{path}: [{name}] {key} must be {type(default).__name__}")
        sections[name] = cls(**values)
    return RelayConfig(data_dir=data_dir, **sections)
