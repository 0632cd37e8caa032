"""What this agent has installed: ``CONFIG/updates/installed.json``, one version per package.

The file is the agent's own (mode 0600, replaced atomically). Versions only move forward:
:meth:`InstalledVersions.check_forward` refuses a version older than or equal to the
installed one unless the push says it is a deliberate downgrade.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from certs.packages import PackageError, compare_versions


class VersionRefused(PackageError):
    pass


class InstalledVersions:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PackageError(f"cannot read {self.path.name}: {exc}") from None
        packages = raw.get("packages", {}) if isinstance(raw, dict) else {}
        return {k: v for k, v in packages.items() if isinstance(v, dict) and "version" in v}

    def version_of(self, name: str) -> str | None:
        entry = self.load().get(name)
        return None if entry is None else str(entry["version"])

    def check_forward(self, name: str, version: str, *, downgrade: bool) -> None:
        installed = self.version_of(name)
        if installed is None:
            return
        order = compare_versions(version, installed)
        if order > 0:
            return
        if order < 0 and downgrade:
            return
        what = "the same as" if order == 0 else "older than"
        hint = "" if order == 0 else " (push it as a deliberate downgrade to allow this)"
        raise VersionRefused(f"{name} {version} is {what} the installed version {installed}{hint}")

    def record(self, name: str, version: str, **details: Any) -> None:
        packages = self.load()
        packages[name] = {"version": version, "installed_at": time.time(), **details}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps({"packages": packages}, indent=2, sort_keys=True).encode()
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".installed.")
        try:
            os.fchmod(handle, 0o600)
            os.write(handle, data)
            os.fsync(handle)
            os.close(handle)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(handle)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
