"""The consent windows (Tk), each run as its own process by :mod:`agent.consent`.

``python -m agent.dialog prompt`` asks the user to allow or deny a session;
``python -m agent.dialog notice`` shows that a session is running, with an
"End session" button. This module owns those windows and the little protocol
with the agent that starts them:

- stdin: one JSON line, ``{"request": {...ConsentRequest fields...}, "timeout": SECONDS}``
  (``timeout`` for the prompt only). Stdin then stays open; when it closes (the
  agent is done with the window, or died) the window goes away without a word.
- stdout: ``ready`` once the window is on screen (or ``error TEXT`` when it
  cannot be shown), then one answer: ``allow``, ``deny`` or ``timeout`` for the
  prompt, ``end`` for the notice, and the process exits.

Closing the prompt window denies; the prompt denies by itself when its
countdown ends, and its Allow button only wakes up after :data:`ALLOW_DELAY`
seconds, so a click or a keystroke meant for another window cannot allow.
Closing the notice ends the session. Every text shown is cleaned again here
(:func:`agent.consent.clean_text`): Tk labels are not markup, but control
characters and unbounded lengths have no place in them.

Layout contract (the tests click by it): the buttons sit in the window's bottom
corners, :data:`EDGE` pixels in from the sides and the bottom: "Deny" bottom
left, "Allow" (or "End session") bottom right.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import tkinter as tk
from collections.abc import Callable
from tkinter import font as tkfont
from tkinter import ttk
from typing import Any

from .consent import (
    FIELD_LIMITS,
    ConsentRequest,
    clean_request,
    clean_text,
    notice_text,
    prompt_facts,
)

PROMPT_TITLE = "Helpline: remote access request"
NOTICE_TITLE = "Helpline: session in progress"

#: Pixels between the window's edges and its buttons.
EDGE = 12
#: Seconds before the prompt's Allow button accepts a click.
ALLOW_DELAY = 1.0
#: Longest prompt countdown accepted, in seconds.
MAX_TIMEOUT = 3600.0
#: The longest stdin line read.
MAX_PAYLOAD = 16384
#: Width of the text columns, in pixels.
TEXT_WIDTH = 420


def emit(word: str) -> None:
    """Tell the agent something: one line on stdout. A vanished agent is not an error."""
    try:
        sys.stdout.write(word + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        os._exit(0)


def read_payload() -> tuple[ConsentRequest, float]:
    """The request (cleaned) and timeout from the JSON line on stdin; ValueError if bad."""
    line = sys.stdin.buffer.readline(MAX_PAYLOAD)
    try:
        payload = json.loads(line)
        raw = payload["request"]
        request = ConsentRequest(**{name: str(raw.get(name, "")) for name in FIELD_LIMITS})
        timeout = float(payload.get("timeout", 30.0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad request line: {exc}") from None
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("bad timeout")
    return clean_request(request), min(timeout, MAX_TIMEOUT)


class Window:
    """A Tk root window with the parts both dialogs share: hardening, stdin watch, answer."""

    def __init__(self, title: str, on_close: str) -> None:
        self.root = tk.Tk(className="HelplineConsent")
        self.root.withdraw()
        # Tk's "send" lets any client of the display run Tcl in this process: not here.
        self.root.tk.call("rename", "send", "")
        self.root.title(title)
        self.root.resizable(False, False)
        self.root.attributes("-topmost", True)
        self.root.protocol("WM_DELETE_WINDOW", lambda: self.answer(on_close))
        self.answered = False
        self.bold = tkfont.nametofont("TkDefaultFont").copy()
        self.bold.configure(weight="bold")
        self.frame = ttk.Frame(self.root, padding=EDGE)
        self.frame.pack(fill="both", expand=True)
        self.frame.columnconfigure(1, weight=1)
        # The agent closes our stdin when it is done with us (or when it dies).
        self.root.tk.createfilehandler(sys.stdin.fileno(), tk.READABLE, self._stdin_readable)

    def _stdin_readable(self, fd: Any, mask: int) -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            self.quit()

    def answer(self, word: str) -> None:
        if self.answered:
            return
        self.answered = True
        emit(word)
        self.quit()

    def quit(self) -> None:
        self.answered = True
        with contextlib.suppress(tk.TclError):
            self.root.tk.deletefilehandler(sys.stdin.fileno())
            self.root.destroy()

    def button(self, parent: tk.Misc, text: str, command: Callable[[], None]) -> ttk.Button:
        widget = ttk.Button(parent, text=text, command=command)
        widget.bind("<Return>", lambda event: widget.invoke())
        widget.bind("<KP_Enter>", lambda event: widget.invoke())
        return widget

    def show(self, place: Callable[[int, int, int, int], tuple[int, int]]) -> None:
        """Map the window where ``place(width, height, screen_w, screen_h)`` says, and
        tell the agent it is up."""
        self.root.update_idletasks()
        width, height = self.root.winfo_reqwidth(), self.root.winfo_reqheight()
        screen = self.root.winfo_screenwidth(), self.root.winfo_screenheight()
        x, y = place(width, height, *screen)
        self.root.geometry(f"{width}x{height}+{max(0, x)}+{max(0, y)}")
        self.root.deiconify()
        self.root.lift()
        self.root.update()
        emit("ready")

    def run(self) -> None:
        self.root.mainloop()


class PromptWindow(Window):
    """Allow or deny, with the facts and a countdown."""

    def __init__(self, request: ConsentRequest, timeout: float) -> None:
        super().__init__(PROMPT_TITLE, on_close="deny")
        with_attribute(self.root, "-type", "dialog")
        self.deadline = time.monotonic() + timeout
        ttk.Label(
            self.frame,
            text="A technician asks for remote access to this computer",
            font=self.bold,
        ).grid(row=0, column=0, columnspan=2, sticky="w", pady=(0, EDGE))
        for row, (label, value) in enumerate(prompt_facts(request), start=1):
            ttk.Label(self.frame, text=label + ":", font=self.bold).grid(
                row=row, column=0, sticky="nw", padx=(0, EDGE), pady=2
            )
            ttk.Label(self.frame, text=value, wraplength=TEXT_WIDTH, justify="left").grid(
                row=row, column=1, sticky="nw", pady=2
            )
        self.countdown = ttk.Label(self.frame, text="")
        self.countdown.grid(row=6, column=0, columnspan=2, sticky="w", pady=(EDGE, 0))
        buttons = ttk.Frame(self.frame)
        buttons.grid(row=7, column=0, columnspan=2, sticky="ew", pady=(EDGE, 0))
        self.deny = self.button(buttons, "Deny", lambda: self.answer("deny"))
        self.deny.pack(side="left")
        self.allow = self.button(buttons, "Allow", lambda: self.answer("allow"))
        self.allow.state(["disabled"])
        self.allow.pack(side="right")
        self.root.bind("<Escape>", lambda event: self.answer("deny"))
        self.deny.focus_set()  # Enter or space from a hasty hand denies
        self.tick()

    def tick(self) -> None:
        if self.answered:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.answer("timeout")
            return
        seconds = math.ceil(left)
        self.countdown.configure(
            text=f"Denied automatically in {seconds} second{'s' if seconds != 1 else ''}."
        )
        self.root.after(min(250, max(10, int(left * 1000))), self.tick)

    def wake_allow(self) -> None:
        if not self.answered:
            self.allow.state(["!disabled"])

    def start(self) -> None:
        self.show(lambda w, h, sw, sh: ((sw - w) // 2, (sh - h) // 3))
        self.root.after(int(ALLOW_DELAY * 1000), self.wake_allow)


class NoticeWindow(Window):
    """Who is connected, and an "End session" button; top right of the screen."""

    def __init__(self, request: ConsentRequest) -> None:
        super().__init__(NOTICE_TITLE, on_close="end")
        ttk.Label(self.frame, text=notice_text(request), wraplength=320, justify="left").grid(
            row=0, column=0, columnspan=2, sticky="w"
        )
        buttons = ttk.Frame(self.frame)
        buttons.grid(row=1, column=0, columnspan=2, sticky="ew", pady=(EDGE, 0))
        self.end = self.button(buttons, "End session", lambda: self.answer("end"))
        self.end.pack(side="right")

    def start(self) -> None:
        self.show(lambda w, h, sw, sh: (sw - w - 2 * EDGE, 2 * EDGE))


def with_attribute(root: tk.Tk, name: str, value: str) -> None:
    """Set a window manager attribute some platforms lack."""
    with contextlib.suppress(tk.TclError):
        root.attributes(name, value)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["prompt"], ["notice"]):
        print("usage: python -m agent.dialog prompt|notice  (request as JSON on stdin)")
        return 2
    try:
        request, timeout = read_payload()
    except ValueError as exc:
        emit("error " + clean_text(str(exc), 200))
        return 2
    try:
        window: PromptWindow | NoticeWindow
        window = PromptWindow(request, timeout) if args == ["prompt"] else NoticeWindow(request)
        window.start()
    except tk.TclError as exc:
        emit("error " + clean_text(str(exc), 200))
        return 1
    window.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
