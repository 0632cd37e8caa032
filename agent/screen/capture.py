"""Grabbing the screen: the monitor list, one monitor's pixels, the pointer position.

Monitors are those the X server reports through RandR 1.5 (``xrandr
--listmonitors``: what desktops use, and what ``xrandr --setmonitor`` defines),
falling back to mss's list where RandR says nothing. Pixels come from mss
(MIT-SHM on X11) as a BGRA array of its own; the pointer's position and shape
from XFixes (falling back to the position alone).

Xlib and mss connections belong to the thread that made them, so every call
goes through one worker thread owned by :class:`ScreenCapture`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger("helpline.agent.screen")

Monitor = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True, slots=True)
class CursorImage:
    """The pointer's shape as XFixes gives it: premultiplied ARGB, one int per pixel."""

    serial: int
    hot_x: int
    hot_y: int
    width: int
    height: int
    argb: Sequence[int]

    def png(self) -> bytes:
        """The shape as an RGBA PNG (alpha no longer premultiplied)."""
        pixels = np.asarray(self.argb, dtype=np.uint32).reshape(self.height, self.width)
        alpha = (pixels >> 24).astype(np.uint16)
        rgba = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        for channel, shift in enumerate((16, 8, 0)):
            value = ((pixels >> shift) & 0xFF).astype(np.uint16)
            straight = np.where(alpha > 0, value * 255 // np.maximum(alpha, 1), 0)
            rgba[..., channel] = np.minimum(straight, 255)
        rgba[..., 3] = alpha
        out = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(out, format="PNG")
        return out.getvalue()


@dataclass(frozen=True, slots=True)
class Pointer:
    x: int
    y: int
    shape: CursorImage | None


class CaptureError(RuntimeError):
    """The screen cannot be captured (no display, or it went away)."""


class _ThreadState:
    """What lives on the capture thread: the mss instance and an Xlib display."""

    def __init__(self, display: str) -> None:
        import mss
        from Xlib import display as xdisplay

        self.grabber: Any = mss.MSS(display=display) if hasattr(mss, "MSS") else mss.mss()
        self.x = xdisplay.Display(display)
        self.xfixes = False
        if self.x.has_extension("XFIXES"):
            self.x.xfixes_query_version()
            self.xfixes = True

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

    def pointer(self) -> Pointer:
        """The pointer's position, and its shape when XFixes tells it."""
        if not self.xfixes:
            reply = self.x.screen().root.query_pointer()
            return Pointer(int(reply.root_x), int(reply.root_y), None)
        image = self.x.xfixes_get_cursor_image(self.x.screen().root)
        shape = CursorImage(
            int(image.cursor_serial),
            int(image.xhot),
            int(image.yhot),
            int(image.width),
            int(image.height),
            image.cursor_image,
        )
        return Pointer(int(image.x), int(image.y), shape)

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

    async def grab(self, monitor: Monitor) -> tuple[np.ndarray, Pointer]:
        """Pixels (BGRA, height x width x 4; mss hands out a fresh buffer each time, kept
        by the array) and the pointer (desktop position, shape)."""

        def run() -> tuple[np.ndarray, Pointer]:
            state = self._ensure()
            return state.grab(monitor), state.pointer()

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
