"""Printing for the CLI: aligned tables for people, JSON for scripts, readable times."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    ago = time.time() - timestamp
    if 0 <= ago < 90:
        return f"{int(ago)}s ago"
    if 0 <= ago < 5400:
        return f"{int(ago // 60)}m ago"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def printable(value: object) -> str:
    """Untrusted text (agent hostnames...) with control characters made visible."""
    text = str(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[printable(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line.rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def as_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
