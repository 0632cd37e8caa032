"""The progress bar of file transfers on a terminal: percentage, bytes, rate, ETA."""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import IO


def format_size(size: float) -> str:
    """Decimal units, as transfer rates are quoted: ``999 B``, ``1.5 kB``, ``12.3 MB``."""
    if size < 1000:
        return f"{int(size)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 999.95 or unit == "TB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds > 99 * 3600:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(
    name: str, done: int, total: int, rate: float | None, eta: float | None, width: int
) -> str:
    """One line, at most ``width`` columns: name, percentage, bar, bytes, rate, ETA.

    When room is short the bar goes first, then the byte counts, then the name shrinks.
    """
    percent = 100 * done // total if total > 0 else 100
    rate_text = "--- MB/s" if rate is None else f"{rate / 1e6:.1f} MB/s"
    counts = f" {format_size(done)} / {format_size(total)}"
    tail = f"  {rate_text}  ETA {format_eta(eta)}"
    fixed = len(f" {percent:3d}% ") + len(counts) + len(tail)
    short = _shorten(name, max(8, min(width - fixed - 20, width // 2)))
    bar_room = width - len(short) - fixed
    if bar_room >= 12:
        filled = (bar_room - 2) * percent // 100
        bar = "[" + "#" * filled + "-" * (bar_room - 2 - filled) + "]"
        return f"{short} {percent:3d}% {bar}{counts}{tail}"
    for rest in (f" {percent:3d}%{counts}{tail}", f" {percent:3d}%{tail}"):
        if width - len(rest) >= 8:
            return _shorten(name, width - len(rest)) + rest
    return (_shorten(name, 8) + f" {percent:3d}%{tail}")[:width]


def _shorten(name: str, room: int) -> str:
    return name if len(name) <= room else "…" + name[-(room - 1) :]


class ProgressBar:
    """A progress callback that redraws one line of ``stream`` at most ``1/interval`` a second.

    The rate is measured over the last few seconds (so a resumed transfer is not
    credited with the bytes it already had); :meth:`clear` makes room for other
    output, :meth:`finish` draws the final state and leaves the line empty.
    """

    def __init__(
        self,
        name: str,
        stream: IO[str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
        window: float = 5.0,
        width: int | None = None,
    ) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.interval = interval
        self.window = window
        self.width = width
        self.done = 0
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._drawn_at: float | None = None
        self._visible = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        self.done, self.total = done, total
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        if self._drawn_at is None or now - self._drawn_at >= self.interval or done >= total:
            self._draw(now)

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (first_time, first_done), (last_time, last_done) = self._samples[0], self._samples[-1]
        elapsed = last_time - first_time
        return (last_done - first_done) / elapsed if elapsed > 0 else None

    def line(self) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate else None
        width = self.width or shutil.get_terminal_size((80, 24)).columns
        return format_progress(self.name, self.done, self.total, rate, eta, width - 1)

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()
        self._visible = True

    def clear(self) -> None:
        """Erase the line (to print something else); the next update draws it again."""
        if self._visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._visible = False
            self._drawn_at = None

    def finish(self) -> None:
        self.clear()
