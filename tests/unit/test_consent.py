"""Consent policy without a display: the policy table, nobody to ask, the terminal
prompt through a real pseudo-terminal, and the text a user is shown.

The dialog itself is tested for real under Xvfb in
``tests/integration/test_consent_dialog.py``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.consent import (
    ConsentPolicy,
    ConsentRequest,
    ConsentResult,
    clean_request,
    clean_text,
    notice_text,
)
from protocol.sessions import ConsentHow

HEADLESS: dict[str, str] = {}


def request(kind: str = "shell", **changes: str) -> ConsentRequest:
    fields = {
        "session": "s-1",
        "kind": kind,
        "technician": "alice",
        "technician_name": "Alice Example",
        "reason": "printer\x1b[31m broken",
        "device": "front-desk-pc",
    }
    fields.update(changes)
    return ConsentRequest(**fields)


def headless(policies: dict[str, str], timeout: float = 5.0) -> ConsentPolicy:
    return ConsentPolicy(policies, timeout, environ=HEADLESS, stdin_is_tty=False)


# -- the policy table -------------------------------------------------------------------------


async def test_allow_grants_unattended() -> None:
    assert await headless({"shell": "allow"}).decide(request()) == ConsentResult(
        granted=True, how=ConsentHow.ALLOW
    )


async def test_notify_grants_with_a_notice() -> None:
    policy = headless({"update": "notify"})
    assert await policy.decide(request("update")) == ConsentResult(
        granted=True, how=ConsentHow.NOTIFY
    )
    assert await policy.notice(request("update")) is None  # headless: nothing to show


@pytest.mark.parametrize("kind", ["telnet", "", "SHELL", "shell "])
async def test_unknown_kind_is_denied_even_if_a_policy_names_it(kind: str) -> None:
    result = await headless({kind: "allow", "shell": "allow"}).decide(request(kind))
    assert result == ConsentResult(granted=False, how=ConsentHow.NO_USER)


@pytest.mark.parametrize("policy", ["yes", "Allow", "", "deny"])
async def test_unknown_policy_is_denied(policy: str) -> None:
    result = await headless({"shell": policy}).decide(request())
    assert result == ConsentResult(granted=False, how=ConsentHow.NO_USER)


async def test_prompt_with_no_display_and_no_terminal_is_denied() -> None:
    result = await headless({"shell": "prompt"}).decide(request())
    assert result == ConsentResult(granted=False, how=ConsentHow.NO_USER)


async def test_a_kind_missing_from_the_table_is_prompted_for_not_allowed() -> None:
    result = await headless({"shell": "allow"}).decide(request("files"))
    assert result == ConsentResult(granted=False, how=ConsentHow.NO_USER)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        ConsentPolicy({}, timeout, environ=HEADLESS, stdin_is_tty=False)


def test_display_comes_from_the_given_environment() -> None:
    assert not headless({}).has_display()
    for variable in ("DISPLAY", "WAYLAND_DISPLAY"):
        policy = ConsentPolicy({}, 5, environ={variable: ":9"}, stdin_is_tty=False)
        assert policy.has_display()
    policy = ConsentPolicy({}, 5, environ={"DISPLAY": ":7", "XAUTHORITY": "/x"})
    env = policy.dialog_environment()
    assert (env["DISPLAY"], env["XAUTHORITY"]) == (":7", "/x")
    assert "WAYLAND_DISPLAY" not in env


def test_dialog_without_a_display_reports_an_error() -> None:
    """The dialog process says why it cannot show a window (and the policy falls back)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    line = b'{"request": {"session": "s", "kind": "shell"}, "timeout": 5}\n'
    for stdin, code in ((line, 1), (b"not json\n", 2)):
        done = subprocess.run(
            [sys.executable, "-m", "agent.dialog", "prompt"],
            input=stdin,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == code
        assert done.stdout.startswith(b"error "), done


# -- what is shown ----------------------------------------------------------------------------


def test_clean_text_strips_controls_and_limits_length() -> None:
    assert clean_text("a\x1b[2Jb\x07c", 50) == "a[2Jbc"
    assert clean_text("evil\u202eexe.txt\u200b", 50) == "evilexe.txt"  # bidi, zero width
    assert clean_text(" line one\nline two\r\n\tend ", 50) == "line one line two end"
    assert clean_text("x" * 100, 10) == "x" * 9 + "…"
    assert clean_text("é日本", 10) == "é日本"


def test_clean_request_bounds_every_field() -> None:
    shown = clean_request(request(reason="r" * 5000, technician_name="n\x00" * 500))
    assert len(shown.reason) == 512
    assert shown.technician_name == "n" * 127 + "…"


def test_notice_text() -> None:
    shown = clean_request(request())
    assert notice_text(shown) == (
        "Alice Example (alice) is connected: shell session — reason: printer[31m broken"
    )
    assert notice_text(request(reason="", technician_name="")) == (
        "alice is connected: shell session"
    )


# -- the terminal prompt ----------------------------------------------------------------------


@dataclass
class Terminal:
    master: int
    slave: int

    def policy(self, timeout: float = 10.0) -> ConsentPolicy:
        return ConsentPolicy(
            {"shell": "prompt", "update": "notify"},
            timeout,
            environ=HEADLESS,
            input_fd=self.slave,
            output_fd=self.slave,
        )

    async def read_until(self, text: str, seconds: float = 10.0) -> str:
        """What the agent wrote, up to ``text`` (bounded polling)."""
        seen = b""
        deadline = time.monotonic() + seconds
        while text.encode() not in seen:
            assert time.monotonic() < deadline, f"no {text!r} on the terminal: {seen!r}"
            readable, _, _ = select.select([self.master], [], [], 0)
            if readable:
                seen += os.read(self.master, 4096)
            else:
                await asyncio.sleep(0.02)
        return seen.decode()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    master, slave = os.openpty()
    try:
        yield Terminal(master, slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize(("answer", "granted"), [("y", True), ("YES", True), ("n", False)])
async def test_terminal_answer(terminal: Terminal, answer: str, granted: bool) -> None:
    task = asyncio.create_task(terminal.policy().decide(request()))
    shown = await terminal.read_until("Allow? [y/N] ")
    for fact in ("Alice Example (alice)", "shell", "printer[31m broken", "front-desk-pc"):
        assert fact in shown
    assert "\x1b" not in shown  # the technician's text cannot drive the terminal
    terminal.type(answer + "\n")
    result = await asyncio.wait_for(task, 10)
    assert result == ConsentResult(granted=granted, how=ConsentHow.PROMPT, by=getpass.getuser())


async def test_terminal_silence_times_out(terminal: Terminal) -> None:
    task = asyncio.create_task(terminal.policy(timeout=0.5).decide(request()))
    await terminal.read_until("Allow? [y/N] ")
    result = await asyncio.wait_for(task, 10)
    assert result == ConsentResult(granted=False, how=ConsentHow.TIMEOUT)
    await terminal.read_until("No answer: denied.")


async def test_terminal_typed_ahead_answer_does_not_count(terminal: Terminal) -> None:
    terminal.type("y\n")  # before the question was asked
    result = await asyncio.wait_for(terminal.policy(timeout=0.5).decide(request()), 10)
    assert result == ConsentResult(granted=False, how=ConsentHow.TIMEOUT)


async def test_terminal_end_of_input_denies(terminal: Terminal) -> None:
    task = asyncio.create_task(terminal.policy().decide(request()))
    await terminal.read_until("Allow? [y/N] ")
    terminal.type("\x04")  # Ctrl-D
    result = await asyncio.wait_for(task, 10)
    assert (result.granted, result.how) == (False, ConsentHow.PROMPT)


async def test_terminal_asks_one_question_at_a_time(terminal: Terminal) -> None:
    policy = terminal.policy()
    first = asyncio.create_task(policy.decide(request(session="s-1")))
    second = asyncio.create_task(policy.decide(request(session="s-2")))
    await terminal.read_until("Allow? [y/N] ")
    terminal.type("y\n")
    assert (await asyncio.wait_for(first, 10)).granted
    await terminal.read_until("Allow? [y/N] ")
    terminal.type("n\n")
    assert not (await asyncio.wait_for(second, 10)).granted


async def test_headless_notice_goes_to_the_terminal(terminal: Terminal) -> None:
    assert await terminal.policy().notice(request("update")) is None
    await terminal.read_until("Alice Example (alice) is connected: update session")


def test_terminal_not_used_when_stdin_is_not_a_tty() -> None:
    read_end, write_end = os.pipe()
    try:
        policy = ConsentPolicy({}, 5, environ=HEADLESS, input_fd=read_end, output_fd=write_end)
        assert not policy.has_terminal()
    finally:
        os.close(read_end)
        os.close(write_end)
