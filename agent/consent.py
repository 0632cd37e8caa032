"""Consent on the agent: who decides whether a technician's session may start.

This module owns the decision for one session request (DESIGN section 4):
the local policy per session kind (``allow``, ``notify``, ``prompt``), asking
the logged-in user when the policy says ``prompt``, and the notice shown while
a granted session runs, with its "End session" button.

Asking the user, in order of preference:

1. a desktop dialog (Tk) when a display is available: it runs in its own
   process (``python -m agent.dialog``, see :mod:`agent.dialog`), so the
   agent's event loop never blocks on Tk and Tk's threading rules never apply;
2. otherwise a question on the agent's terminal when it runs in the foreground
   of one (the facts on stderr, the answer read from stdin);
3. otherwise nobody can be asked, and the answer is no.

Silence denies: no answer before the timeout is a denial, and so is anything
this module does not understand (an unknown kind, an unknown policy, a dialog
that died). Everything shown to the user came from the network: it is
stripped of control characters and cut to a length before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import json
import locale
import logging
import math
import os
import sys
import termios
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from protocol.sessions import ConsentHow, SessionKind

__all__ = [
    "ConsentPolicy",
    "ConsentRequest",
    "ConsentResult",
    "Notice",
    "clean_request",
    "clean_text",
    "describe_kind",
    "describe_technician",
    "notice_text",
]

log = logging.getLogger("helpline.agent.consent")

POLICIES = frozenset({"prompt", "notify", "allow"})

#: What a policy missing from the mapping means for a known kind: ask.
DEFAULT_POLICY = "prompt"

#: Environment variables that say where the user's desktop is; passed to the dialog.
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")

#: Seconds the dialog process has to show its window before the terminal is tried instead.
DIALOG_START_TIMEOUT = 10.0
#: Seconds the dialog is given beyond the timeout to report its own countdown's end.
ANSWER_GRACE = 1.0
#: Seconds for each step of stopping a dialog process (end of input, SIGTERM, SIGKILL).
STOP_STEP = 2.0

#: The longest text shown for each field of a request (characters, after cleaning).
FIELD_LIMITS = {
    "session": 64,
    "kind": 32,
    "technician": 64,
    "technician_name": 128,
    "reason": 512,
    "device": 128,
}

_KIND_TEXT = {
    SessionKind.SHELL: "a command shell on this computer",
    SessionKind.VIEW: "see your screen",
    SessionKind.CONTROL: "see and control your screen, keyboard and mouse",
    SessionKind.FILES: "read and write files on this computer",
    SessionKind.UPDATE: "install a software update",
}

_KINDS = frozenset(kind.value for kind in SessionKind)
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_TERMINAL_READ_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """One session request, as the relay verified it, to be decided on this machine."""

    session: str  # session id
    kind: str  # "shell", "view", "control", "files", "update"
    technician: str  # username as the relay verified it
    technician_name: str  # full name as the relay verified it
    reason: str
    device: str  # this machine's device name


@dataclass(frozen=True, slots=True)
class ConsentResult:
    granted: bool
    how: ConsentHow
    by: str = ""  # the local account that answered a prompt, if any


# -- what the user is shown -------------------------------------------------------------------


def clean_text(text: str, limit: int) -> str:
    """``text`` made safe to show: no control or format characters, one line, at most
    ``limit`` characters (a longer text ends with an ellipsis)."""
    kept: list[str] = []
    for char in str(text)[: limit * 4]:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char)[0] != "C":  # Cc, Cf (bidi overrides), Cs, Co, Cn
            kept.append(char)
    cleaned = " ".join("".join(kept).split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def clean_request(request: ConsentRequest) -> ConsentRequest:
    """A copy of ``request`` with every field passed through :func:`clean_text`."""
    fields = {
        name: clean_text(getattr(request, name), limit) for name, limit in FIELD_LIMITS.items()
    }
    return ConsentRequest(**fields)


def describe_technician(request: ConsentRequest) -> str:
    """``Full Name (username)``, or the username alone when there is no other name."""
    name, user = request.technician_name, request.technician
    if name and user and name != user:
        return f"{name} ({user})"
    return name or user or "an unknown technician"


def describe_kind(kind: str) -> str:
    """``shell (a command shell on this computer)``: the kind and what it lets them do."""
    try:
        return f"{kind} ({_KIND_TEXT[SessionKind(kind)]})"
    except ValueError:
        return kind


def notice_text(request: ConsentRequest) -> str:
    """The one line the notice shows while a session runs."""
    text = f"{describe_technician(request)} is connected: {request.kind} session"
    if request.reason:
        text += f" — reason: {request.reason}"
    return text


def prompt_facts(request: ConsentRequest) -> list[tuple[str, str]]:
    """The facts a prompt shows, as (label, value) rows."""
    return [
        ("Technician", describe_technician(request) + ", as verified by the relay"),
        ("Access", describe_kind(request.kind)),
        ("Reason", request.reason or "(none given)"),
        ("Device", request.device),
    ]


def _terminal_question(request: ConsentRequest, timeout: float) -> str:
    rows = "".join(f"  {label + ':':<12}{value}\n" for label, value in prompt_facts(request))
    return (
        "\nHelpline: remote access request\n"
        f"{rows}"
        f"No answer within {math.ceil(timeout)} seconds denies the request.\n"
        "Allow? [y/N] "
    )


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return str(os.getuid())


# -- the policy -------------------------------------------------------------------------------


class ConsentPolicy:
    """Decides session requests by the local policy per kind, asking the user when told to.

    ``policies`` maps a session kind to ``"prompt"``, ``"notify"`` or ``"allow"``
    (a known kind missing from it is prompted for); ``timeout`` is how many
    seconds the user has to answer. ``environ`` is where the display is looked
    up (default: ``os.environ``); the terminal is ``input_fd`` (read) and
    ``output_fd`` (written), by default the agent's stdin and stderr, and is
    only used when ``stdin_is_tty`` (default: whether ``input_fd`` is a tty).
    """

    def __init__(
        self,
        policies: Mapping[str, str],
        timeout: float,
        *,
        environ: Mapping[str, str] | None = None,
        stdin_is_tty: bool | None = None,
        input_fd: int = 0,
        output_fd: int = 2,
    ) -> None:
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"the prompt timeout must be a positive number, not {timeout!r}")
        self.policies = dict(policies)
        self.timeout = float(timeout)
        self._environ = environ
        self.input_fd = input_fd
        self.output_fd = output_fd
        self.stdin_is_tty = os.isatty(input_fd) if stdin_is_tty is None else stdin_is_tty
        self._terminal_lock = asyncio.Lock()  # one question at a time on the terminal

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def policy_for(self, kind: str) -> str | None:
        """The policy for ``kind``; None when the kind or its policy is unknown."""
        if kind not in _KINDS:
            return None
        policy = self.policies.get(kind, DEFAULT_POLICY)
        return policy if policy in POLICIES else None

    def has_display(self) -> bool:
        return bool(self.environ.get("DISPLAY") or self.environ.get("WAYLAND_DISPLAY"))

    def has_terminal(self) -> bool:
        """True when a question can be asked on the terminal: a tty, and not from the
        background (reading the controlling terminal from there would stop the agent)."""
        if not self.stdin_is_tty:
            return False
        try:
            return os.tcgetpgrp(self.input_fd) == os.getpgrp()
        except OSError:
            return True  # not our controlling terminal: no job control applies

    async def decide(self, request: ConsentRequest) -> ConsentResult:
        policy = self.policy_for(request.kind)
        if policy is None:
            log.warning(
                "session %s: no valid consent policy for kind %r: denied",
                clean_text(request.session, 64),
                clean_text(request.kind, 32),
            )
            return ConsentResult(granted=False, how=ConsentHow.NO_USER)
        if policy == "allow":
            return ConsentResult(granted=True, how=ConsentHow.ALLOW)
        if policy == "notify":
            return ConsentResult(granted=True, how=ConsentHow.NOTIFY)
        shown = clean_request(request)
        if self.has_display():
            result = await self._ask_dialog(shown)
            if result is not None:
                return result
        if self.has_terminal():
            return await self._ask_terminal(shown)
        log.info("session %s: nobody to ask (no display, no terminal): denied", shown.session)
        return ConsentResult(granted=False, how=ConsentHow.NO_USER)

    async def notice(self, request: ConsentRequest) -> Notice | None:
        """Show that a granted session is running, with an "End session" button.

        None when there is no window to show it in (then the line goes to the
        terminal, if the agent runs on one).
        """
        shown = clean_request(request)
        if self.has_display():
            dialog = await _DialogProcess.start("notice", {"request": _as_dict(shown)}, self)
            if dialog is not None:
                return Notice(dialog)
        if self.has_terminal():
            self._write_terminal(f"\nHelpline: {notice_text(shown)}\n")
        return None

    # -- the desktop dialog -----------------------------------------------------------------

    async def _ask_dialog(self, shown: ConsentRequest) -> ConsentResult | None:
        """The user's answer in a dialog window; None when no dialog could be shown."""
        payload = {"request": _as_dict(shown), "timeout": self.timeout}
        dialog = await _DialogProcess.start("prompt", payload, self)
        if dialog is None:
            return None
        try:
            answer = await dialog.read_line(self.timeout + ANSWER_GRACE)
        finally:
            await dialog.stop()
        if answer == "allow":
            return ConsentResult(granted=True, how=ConsentHow.PROMPT, by=_local_user())
        if answer == "deny":
            return ConsentResult(granted=False, how=ConsentHow.PROMPT, by=_local_user())
        if answer in ("timeout", None):
            return ConsentResult(granted=False, how=ConsentHow.TIMEOUT)
        log.warning("the consent dialog ended without an answer: denied")
        return ConsentResult(granted=False, how=ConsentHow.NO_USER)

    def dialog_environment(self) -> dict[str, str]:
        """The dialog's environment: the agent's own, with the display from ``environ``."""
        env = {k: v for k, v in os.environ.items() if k not in DISPLAY_VARIABLES}
        env.update({k: self.environ[k] for k in DISPLAY_VARIABLES if self.environ.get(k)})
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return env

    # -- the terminal -----------------------------------------------------------------------

    async def _ask_terminal(self, shown: ConsentRequest) -> ConsentResult:
        asked = False
        try:
            async with asyncio.timeout(self.timeout), self._terminal_lock:
                asked = True
                with contextlib.suppress(termios.error, OSError):
                    termios.tcflush(self.input_fd, termios.TCIFLUSH)  # no typed-ahead answers
                self._write_terminal(_terminal_question(shown, self.timeout))
                line = await self._read_terminal_line()
        except TimeoutError:
            if asked:
                self._write_terminal("\nNo answer: denied.\n")
            return ConsentResult(granted=False, how=ConsentHow.TIMEOUT)
        except OSError as exc:
            log.warning("cannot read the terminal (%s): denied", exc)
            return ConsentResult(granted=False, how=ConsentHow.NO_USER)
        if line is None:  # end of input (Ctrl-D): not a yes
            self._write_terminal("\nDenied.\n")
            return ConsentResult(granted=False, how=ConsentHow.PROMPT, by=_local_user())
        granted = line.strip().lower() in ("y", "yes")
        self._write_terminal("Allowed.\n" if granted else "Denied.\n")
        return ConsentResult(granted=granted, how=ConsentHow.PROMPT, by=_local_user())

    async def _read_terminal_line(self) -> str | None:
        """One line from the terminal without blocking the loop; None at end of input."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        buffer = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(self.input_fd, _TERMINAL_READ_LIMIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if done.done():
                return
            if not chunk:
                done.set_result(None)
                return
            buffer.extend(chunk)
            if b"\n" in buffer or b"\r" in buffer or len(buffer) >= _TERMINAL_READ_LIMIT:
                line = bytes(buffer).replace(b"\r", b"\n").split(b"\n", 1)[0]
                done.set_result(line.decode("utf-8", "replace"))

        loop.add_reader(self.input_fd, readable)
        try:
            return await done
        finally:
            loop.remove_reader(self.input_fd)

    def _write_terminal(self, text: str) -> None:
        data = text.encode(locale.getpreferredencoding(False) or "utf-8", "replace")
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(self.output_fd, data) :]


def _as_dict(request: ConsentRequest) -> dict[str, str]:
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}


# -- the notice -------------------------------------------------------------------------------


class Notice:
    """The window shown while a granted session runs (see :meth:`ConsentPolicy.notice`).

    :meth:`ended_by_customer` returns when the customer ended the session: the
    "End session" button, or the window closed (or gone) before :meth:`close`.
    After :meth:`close` it never returns: cancel whatever awaits it.
    """

    def __init__(self, dialog: _DialogProcess) -> None:
        self._dialog = dialog
        self._closed = False
        self._ended = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch(), name="helpline-consent-notice")

    @property
    def ended(self) -> bool:
        """True once the customer ended the session from the notice."""
        return self._ended.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def _watch(self) -> None:
        while await self._dialog.read_line(None) not in ("end", ""):  # "" = the window is gone
            pass
        if not self._closed:
            self._ended.set()
        await self._dialog.stop()

    async def ended_by_customer(self) -> None:
        await self._ended.wait()

    async def close(self) -> None:
        """Take the window away: the session ended otherwise. Idempotent."""
        self._closed = True
        try:
            await self._dialog.stop()
        finally:
            if self._watcher is not asyncio.current_task():
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher


# -- the dialog process -----------------------------------------------------------------------


class _DialogProcess:
    """One ``python -m agent.dialog`` process: a JSON line in on stdin, answers out on
    stdout. Its stdin stays open while it runs: the dialog quits when it closes,
    so a dialog never outlives the agent, even one killed without warning."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._stderr = bytearray()
        self._stderr_task = asyncio.create_task(self._collect_stderr())

    @classmethod
    async def start(
        cls, mode: str, payload: Mapping[str, object], policy: ConsentPolicy
    ) -> _DialogProcess | None:
        """A started dialog whose window is on screen; None when it could not show one."""
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # never import an agent/ from the current directory
                "-m",
                "agent.dialog",
                mode,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=policy.dialog_environment(),
                start_new_session=True,  # the terminal's Ctrl-C is the agent's business
            )
        except OSError as exc:
            log.warning("cannot start the consent dialog: %s", exc)
            return None
        dialog = cls(process)
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(payload).encode() + b"\n")
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once: the line below reads its end
        first = await dialog.read_line(DIALOG_START_TIMEOUT)
        if first == "ready":
            return dialog
        await dialog.stop()
        log.warning(
            "the consent dialog could not show a window (%s): %s",
            first or "no answer",
            clean_text(dialog.stderr_tail(), 500) or "no details",
        )
        return None

    async def read_line(self, within: float | None) -> str | None:
        """The next line the dialog printed; "" at its end; None when ``within`` seconds
        passed first (None: no limit)."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                line = await self.process.stdout.readline()
        except TimeoutError:
            return None
        except ValueError:  # a line past the stream limit: not ours
            return "?"
        return line.decode("utf-8", "replace").strip()

    async def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(4096):
            self._stderr.extend(chunk)
            del self._stderr[:-2000]

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    async def stop(self) -> None:
        """End the process and reap it: end of input, then SIGTERM, then SIGKILL, each
        step bounded. Cancelled half-way, it kills the process and reaps it before it
        goes. Safe to call again, and from several tasks."""
        process = self.process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            for step in (None, process.terminate, process.kill):
                if process.returncode is not None:
                    break
                if step is not None:
                    with contextlib.suppress(ProcessLookupError):
                        step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), STOP_STEP)
            await asyncio.wait({self._stderr_task}, timeout=STOP_STEP)
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await self._reap()
            raise
        finally:
            self._stderr_task.cancel()

    async def _reap(self) -> None:
        """Wait (bounded) for a killed process to be gone, whatever cancellations come:
        SIGKILL is quick, and a process left behind would outlive its event loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_STEP
        while self.process.returncode is None and (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self.process.wait(), left)
            except asyncio.CancelledError:
                continue
            except TimeoutError:
                break
