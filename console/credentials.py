"""Where the CLI keeps its login: ``$HELPLINE_CONFIG`` or ``$XDG_CONFIG_HOME/helpline``.

``credentials.json`` (0600) holds the relay URL, its pinned CA, the bearer
token and when it expires. Nothing else is written; the password and the
one-time code are never stored.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def config_dir() -> Path:
    explicit = os.environ.get("HELPLINE_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "helpline"


@dataclass(frozen=True, slots=True)
class Credentials:
    url: str
    ca_pem: str
    token: str
    username: str
    expires_at: float

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(credentials: Credentials) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump(asdict(credentials), handle)
    os.replace(temporary, path)
    return path


def load_credentials() -> Credentials | None:
    try:
        data = json.loads(credentials_path().read_text(encoding="utf-8"))
        return Credentials(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None


def forget_credentials() -> None:
    credentials_path().unlink(missing_ok=True)
