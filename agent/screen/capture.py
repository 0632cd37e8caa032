"""Grabbing the screen: the monitor list, one monitor's pixels, the pointer position.

Monitors are those the X server reports through RandR 1.5 (``xrandr
--listmonitors``: what desktops use, and what ``xrandr --setmonitor`` defines),
falling back to mss's list where RandR says nothing. Pixels come from mss
(MIT-SHM on X11) as a BGRA array that stays valid until the next grab.

Xlib and mss connections belong to the thread that made them, so every call
goes through one worker thread owned by :class:`ScreenCapture`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger("helpline.agent.screen")

Monitor = tuple[int, int, int, int]  # x, y, width, height


class CaptureError(RuntimeError):
    """The screen cannot be captured (no display, or it went away)."""


class _ThreadState:
    """What lives on the capture thread: the mss instance and an Xlib display."""

    def __init__(self, display: str) -> None:
        import mss
        from Xlib import display as xdisplay

        self.grabber: Any = mss.MSS(display=display) if hasattr(mss, "MSS") else mss.mss()
        self.x = xdisplay.Display(display)

    def monitors(self) -> list[Monitor]:
        found: list[Monitor] = []
        try:
            from Xlib.ext import randr

            if self.x.has_extension("RANDR"):
                reply = randr.get_monitors(self.x.screen().root)
                found = [
                    (m.x, m.y, m.width_in_pixels, m.height_in_pixels)
                    for m in reply.monitors
                    if m.width_in_pixels > 0 and m.height_in_pixels > 0
                ]
        except Exception as exc:  # an X server without RandR 1.5
            log.debug("RandR monitors unavailable: %s", exc)
        if not found:
            found = [
                (m["left"], m["top"], m["width"], m["height"]) for m in self.grabber.monitors[1:]
            ]
        return sorted(found, key=lambda m: (m[0], m[1]))

    def grab(self, monitor: Monitor) -> np.ndarray:
        x, y, width, height = monitor
        shot = self.grabber.grab({"left": x, "top": y, "width": width, "height": height})
        pixels = np.frombuffer(shot.raw, dtype=np.uint8)
        return pixels.reshape(shot.height, shot.width, 4)

    def pointer(self) -> tuple[int, int]:
        reply = self.x.screen().root.query_pointer()
        return int(reply.root_x), int(reply.root_y)

    def close(self) -> None:
        self.grabber.close()
        self.x.close()


class ScreenCapture:
    """The capture thread of one screen session."""

    def __init__(self, display: str | None = None) -> None:
        name = display if display is not None else os.environ.get("DISPLAY", "")
        if not name:
            raise CaptureError("no display to capture (DISPLAY is not set)")
        self.display = name
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="helpline-capture")
        self._state: _ThreadState | None = None

    def _ensure(self) -> _ThreadState:
        if self._state is None:
            self._state = _ThreadState(self.display)
        return self._state

    async def _call(self, name: str, *args: Any) -> Any:
        def run() -> Any:
            return getattr(self._ensure(), name)(*args)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except CaptureError:
            raise
        except Exception as exc:
            raise CaptureError(f"cannot capture the screen: {exc}") from exc

    async def monitors(self) -> list[Monitor]:
        monitors: list[Monitor] = await self._call("monitors")
        return monitors

    async def grab(self, monitor: Monitor) -> tuple[np.ndarray, tuple[int, int]]:
        """Pixels (BGRA, height x width x 4, a copy) and the pointer's desktop position."""

        def run() -> tuple[np.ndarray, tuple[int, int]]:
            state = self._ensure()
            return state.grab(monitor).copy(), state.pointer()

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except Exception as exc:
            raise CaptureError(f"cannot capture the screen: {exc}") from exc

    async def close(self) -> None:
        def run() -> None:
            if self._state is not None:
                self._state.close()
                self._state = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except Exception as exc:
            log.debug("closing the capture: %s", exc)
        self._executor.shutdown(wait=False)
