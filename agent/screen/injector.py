"""Replaying a technician's pointer and keys on this machine, with pynput and XTest.

The pointer goes through pynput's mouse controller. Keys go through the XTest
extension, as a physical keyboard's would (pynput does so for keys it knows by
keysym; for characters it sends synthetic events to the focused window, which
toolkits may ignore and which need a window manager to find the focus): the
keysym comes from pynput's tables, the keycode from the server's keyboard
mapping, and Shift is added when the character sits on the shifted level.
Text is typed the same way, character by character; a character with no key
on the device's layout is refused with a clear message.

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
        self._x: Any = None
        self._held_keys: set[KeySpec] = set()
        self._held_buttons: set[str] = set()

    def _controllers(self) -> tuple[Any, Any]:
        if self._mouse is None:
            if self.display and not os.environ.get("DISPLAY"):
                os.environ["DISPLAY"] = self.display  # pynput reads it when imported
            from pynput import mouse
            from Xlib import display

            self._mouse, self._x = mouse.Controller(), display.Display(self.display or None)
        return self._mouse, self._x

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
        mouse, _x = self._controllers()
        from pynput.mouse import Button

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

    def _keysym(self, spec: KeySpec) -> int:
        self._controllers()
        from pynput._util.xorg import char_to_keysym
        from pynput.keyboard import Key

        kind, name = spec
        if kind == "special":
            return int(getattr(Key, name).value.vk)
        return int(char_to_keysym(name))

    def _fake(self, keycode: int, press: bool) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        _mouse, x = self._controllers()
        xtest.fake_input(x, X.KeyPress if press else X.KeyRelease, keycode)
        x.sync()

    def _keycode(self, keysym: int, what: str) -> tuple[int, bool]:
        """The keycode for ``keysym`` and whether it needs Shift."""
        _mouse, x = self._controllers()
        for keycode, index in x.keysym_to_keycodes(keysym):
            return keycode, index % 2 == 1
        raise InputError(f"cannot type {what}: no key for it on the device's keyboard layout")

    def _key(self, event: KeyInput) -> None:
        try:
            spec = key_for(event.code, event.key)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        keycode, _shifted = self._keycode(self._keysym(spec), repr(event.code[:32]))
        if event.action in (KeyAction.DOWN, KeyAction.PRESS):
            self._fake(keycode, True)
            self._held_keys.add(spec)
        if event.action in (KeyAction.UP, KeyAction.PRESS):
            self._fake(keycode, False)
            self._held_keys.discard(spec)

    def _text(self, text: str) -> None:
        shift, _ = self._keycode(self._keysym(("special", "shift")), "Shift")
        plan = []
        for char in text:
            spec = ("special", "enter") if char == "\n" else ("char", char)
            plan.append(self._keycode(self._keysym(spec), repr(char)))
        for keycode, shifted in plan:  # all or nothing: every character has a key
            if shifted:
                self._fake(shift, True)
            self._fake(keycode, True)
            self._fake(keycode, False)
            if shifted:
                self._fake(shift, False)

    def _release_all(self) -> None:
        if not (self._held_keys or self._held_buttons):
            return
        mouse, _x = self._controllers()
        from pynput.mouse import Button

        for spec in list(self._held_keys):
            self._fake(self._keycode(self._keysym(spec), "a held key")[0], False)
        for button in list(self._held_buttons):
            mouse.release(getattr(Button, button))
        self._held_keys.clear()
        self._held_buttons.clear()
