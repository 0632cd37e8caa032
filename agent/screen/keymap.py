"""Browser key codes (``KeyboardEvent.code``) to the keys pynput presses.

``code`` names the physical key on a US layout whatever the technician's
layout (``KeyA`` is the key right of Tab's row start, ``Digit1`` the key above
Q...). Pressing the same physical key here, with modifiers sent as keys of
their own, types what a local keyboard would. A code this table does not
know falls back to ``KeyboardEvent.key`` when that is one printable
character; anything else is refused with a clear message.
"""

from __future__ import annotations

#: A key to press: ("char", "a") or ("special", "ctrl_l") (a ``pynput.keyboard.Key`` name).
KeySpec = tuple[str, str]

_SPECIAL = {
    "Enter": "enter",
    "NumpadEnter": "enter",
    "Tab": "tab",
    "Space": "space",
    "Backspace": "backspace",
    "Delete": "delete",
    "Insert": "insert",
    "Escape": "esc",
    "Home": "home",
    "End": "end",
    "PageUp": "page_up",
    "PageDown": "page_down",
    "ArrowLeft": "left",
    "ArrowRight": "right",
    "ArrowUp": "up",
    "ArrowDown": "down",
    "ShiftLeft": "shift_l",
    "ShiftRight": "shift_r",
    "ControlLeft": "ctrl_l",
    "ControlRight": "ctrl_r",
    "AltLeft": "alt_l",
    "AltRight": "alt_gr",
    "MetaLeft": "cmd_l",
    "MetaRight": "cmd_r",
    "OSLeft": "cmd_l",
    "OSRight": "cmd_r",
    "CapsLock": "caps_lock",
    "NumLock": "num_lock",
    "ScrollLock": "scroll_lock",
    "PrintScreen": "print_screen",
    "Pause": "pause",
    "ContextMenu": "menu",
    **{f"F{n}": f"f{n}" for n in range(1, 21)},
}

_CHARS = {
    **{f"Key{c}": c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{f"Digit{n}": str(n) for n in range(10)},
    **{f"Numpad{n}": str(n) for n in range(10)},
    "Minus": "-",
    "Equal": "=",
    "BracketLeft": "[",
    "BracketRight": "]",
    "Backslash": "\\",
    "Semicolon": ";",
    "Quote": "'",
    "Backquote": "`",
    "Comma": ",",
    "Period": ".",
    "Slash": "/",
    "IntlBackslash": "<",
    "NumpadAdd": "+",
    "NumpadSubtract": "-",
    "NumpadMultiply": "*",
    "NumpadDivide": "/",
    "NumpadDecimal": ".",
}


class UnknownKey(ValueError):
    pass


def key_for(code: str, key: str = "") -> KeySpec:
    """The key to press for a browser ``code`` (and ``key`` as the fallback)."""
    if code in _SPECIAL:
        return ("special", _SPECIAL[code])
    if code in _CHARS:
        return ("char", _CHARS[code])
    if len(key) == 1 and key.isprintable():
        return ("char", key)
    raise UnknownKey(f"unknown key code {code[:32]!r}")
