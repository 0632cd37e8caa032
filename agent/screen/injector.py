"""Replaying a technician's pointer and keys on this machine, with pynput.

pynput connects to the display when it is imported, and its X connection
belongs to one thread, so it is imported and used on a worker thread of its
own. Positions arrive relative to the monitor shown and are offset to the
desktop here and clamped to that monitor. Keys still held when the session
ends are released, so a technician who drops mid-Ctrl never leaves Ctrl down.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from protocol.screen import KeyAction, KeyInput, PointerAction, PointerInput, TextInput

from .capture import Monitor
from .keymap import KeySpec, key_for

log = logging.getLogger("helpline.agent.screen")


class InputError(RuntimeError):
    """Input could not be replayed (unknown key, no display...): a safe message."""


class InputInjector:
    def __init__(self, display: str | None = None) -> None:
        self.display = display if display is not None else os.environ.get("DISPLAY", "")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="helpline-input")
        self._mouse: Any = None
        self._keyboard: Any = None
        self._held_keys: set[KeySpec] = set()
        self._held_buttons: set[str] = set()

    def _controllers(self) -> tuple[Any, Any]:
        if self._mouse is None:
            os.environ.setdefault("DISPLAY", self.display)
            from pynput import keyboard, mouse

            self._mouse, self._keyboard = mouse.Controller(), keyboard.Controller()
        return self._mouse, self._keyboard

    async def _run(self, function: Any, *args: Any) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        except InputError:
            raise
        except Exception as exc:
            log.warning("input failed: %s", exc)
            raise InputError("the input could not be replayed on the device") from exc

    async def pointer(self, event: PointerInput, monitor: Monitor) -> None:
        await self._run(self._pointer, event, monitor)

    async def key(self, event: KeyInput) -> None:
        await self._run(self._key, event)

    async def text(self, event: TextInput) -> None:
        await self._run(self._text, event.text)

    async def release_all(self) -> None:
        await self._run(self._release_all)

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    # -- on the input thread ----------------------------------------------------------------

    def _pointer(self, event: PointerInput, monitor: Monitor) -> None:
        from pynput.mouse import Button

        mouse, _keyboard = self._controllers()
        left, top, width, height = monitor
        mouse.position = (
            left + min(max(event.x, 0), width - 1),
            top + min(max(event.y, 0), height - 1),
        )
        if event.action == PointerAction.WHEEL:
            if event.dx or event.dy:
                mouse.scroll(event.dx, -event.dy)  # pynput: positive dy scrolls up
            return
        if event.action == PointerAction.MOVE:
            return
        if not event.button:
            raise InputError(f"pointer {event.action} without a button")
        button = getattr(Button, event.button)
        if event.action == PointerAction.DOWN:
            mouse.press(button)
            self._held_buttons.add(event.button)
        else:
            mouse.release(button)
            self._held_buttons.discard(event.button)

    def _resolve(self, spec: KeySpec) -> Any:
        from pynput.keyboard import Key

        kind, name = spec
        return getattr(Key, name) if kind == "special" else name

    def _key(self, event: KeyInput) -> None:
        try:
            spec = key_for(event.code, event.key)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        _mouse, keyboard = self._controllers()
        key = self._resolve(spec)
        if event.action in (KeyAction.DOWN, KeyAction.PRESS):
            keyboard.press(key)
            self._held_keys.add(spec)
        if event.action in (KeyAction.UP, KeyAction.PRESS):
            keyboard.release(key)
            self._held_keys.discard(spec)

    def _text(self, text: str) -> None:
        _mouse, keyboard = self._controllers()
        keyboard.type(text)

    def _release_all(self) -> None:
        if not (self._held_keys or self._held_buttons):
            return
        from pynput.mouse import Button

        mouse, keyboard = self._controllers()
        for spec in list(self._held_keys):
            keyboard.release(self._resolve(spec))
        for button in list(self._held_buttons):
            mouse.release(getattr(Button, button))
        self._held_keys.clear()
        self._held_buttons.clear()
