"""Playing an asciicast v2 recording in the terminal, with speed control and idle capping."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable


def events(lines: Iterable[str]) -> Iterable[tuple[float, str, str]]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return  # a recording cut short by a crash ends at its last whole line
        if isinstance(record, list) and len(record) == 3:
            yield float(record[0]), str(record[1]), str(record[2])


def play(
    text: str, *, speed: float = 1.0, idle_limit: float | None = 2.0, out: int | None = None
) -> None:
    """Write the output events of ``text`` to ``out`` with their timing."""
    fd = sys.stdout.fileno() if out is None else out
    lines = text.splitlines()
    if not lines:
        return
    header = json.loads(lines[0])
    if header.get("version") != 2:
        raise ValueError("not an asciicast v2 recording")
    previous = 0.0
    for at, kind, data in events(lines[1:]):
        delay = max(0.0, at - previous)
        previous = at
        if idle_limit is not None:
            delay = min(delay, idle_limit)
        if delay and speed > 0:
            time.sleep(delay / speed)
        if kind == "o":
            os.write(fd, data.encode("utf-8"))
