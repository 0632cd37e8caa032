"""The consent dialog for real: Xvfb, the real Tk windows, ``xdotool`` clicking.

Needs the Debian packages ``xvfb`` and ``xdotool`` (and Tk for Python:
``python3-tk``). Missing, these tests fail: they are the only proof that a
customer can actually answer.

The buttons are found by the layout contract of :mod:`agent.dialog`: bottom
corners, ``EDGE`` pixels in. Every wait is bounded polling; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psutil
import pytest

from agent.consent import ConsentPolicy, ConsentRequest, ConsentResult
from agent.dialog import EDGE, NOTICE_TITLE, PROMPT_TITLE
from protocol.sessions import ConsentHow

from .screen_helpers import xvfb

pytestmark = pytest.mark.integration

T = TypeVar("T")

#: A point this far inside a button's outer corner is on the button.
INSET = 6


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private X server on a free display number, for this module."""
    with xvfb() as number:
        yield number


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(
        ["xdotool", *args],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return result.stdout


def find_window(display: str, title: str) -> str:
    """The id of the window named ``title`` (waits for it, bounded)."""
    found = xdotool(display, "search", "--sync", "--name", f"^{title}$").split()
    assert found, f"no window {title!r}"
    return found[0]


def windows_named(display: str, title: str) -> list[str]:
    return xdotool(display, "search", "--name", f"^{title}$").split()


def geometry(display: str, window: str) -> tuple[int, int]:
    fields = dict(
        line.split("=", 1)
        for line in xdotool(display, "getwindowgeometry", "--shell", window).split()
    )
    return int(fields["WIDTH"]), int(fields["HEIGHT"])


def click(display: str, window: str, corner: str) -> None:
    """Click the button in the window's bottom ``corner`` ("left" or "right")."""
    width, height = geometry(display, window)
    x = EDGE + INSET if corner == "left" else width - EDGE - INSET
    y = height - EDGE - INSET
    xdotool(display, "mousemove", "--window", window, str(x), str(y), "click", "1")


async def until_done(
    task: asyncio.Task[T], action: Callable[[], object] | None = None, seconds: float = 15
) -> T:
    """The task's result, doing ``action`` (in a thread) every round until it is done."""
    deadline = time.monotonic() + seconds
    while not task.done():
        assert time.monotonic() < deadline, "timed out waiting for the answer"
        if action is not None:
            await asyncio.to_thread(action)
        await asyncio.wait({task}, timeout=0.3)
    return task.result()


def dialog_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "agent.dialog" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def clean(display: str) -> Iterator[None]:
    """After each test: no dialog window left, no dialog process left."""
    yield
    for title in (PROMPT_TITLE, NOTICE_TITLE):
        assert windows_named(display, title) == [], f"a {title!r} window was left behind"
    assert dialog_processes() == [], "a dialog process was left behind"


def request(kind: str = "shell") -> ConsentRequest:
    return ConsentRequest(
        session="s-42",
        kind=kind,
        technician="alice",
        technician_name="Alice Example",
        reason="The printer on the second floor\x1b[2J does not print",
        device="front-desk-pc",
    )


def policy(display: str, timeout: float = 20.0, kind_policy: str = "prompt") -> ConsentPolicy:
    return ConsentPolicy(
        {"shell": kind_policy, "view": kind_policy},
        timeout,
        environ={"DISPLAY": display},
        stdin_is_tty=False,
    )


async def answered_by_click(display: str, corner: str) -> ConsentResult:
    task = asyncio.create_task(policy(display).decide(request()))
    window = await asyncio.to_thread(find_window, display, PROMPT_TITLE)
    # Allow wakes up a moment after the window shows: click until the answer comes.
    return await until_done(task, lambda: click(display, window, corner))


@pytest.mark.usefixtures("clean")
async def test_allow_button_grants(display: str) -> None:
    result = await answered_by_click(display, "right")
    assert result.granted is True
    assert result.how == ConsentHow.PROMPT
    assert result.by


@pytest.mark.usefixtures("clean")
async def test_deny_button_denies(display: str) -> None:
    result = await answered_by_click(display, "left")
    assert result.granted is False
    assert result.how == ConsentHow.PROMPT


@pytest.mark.usefixtures("clean")
async def test_escape_key_denies(display: str) -> None:
    task = asyncio.create_task(policy(display).decide(request()))
    window = await asyncio.to_thread(find_window, display, PROMPT_TITLE)
    await asyncio.to_thread(xdotool, display, "windowfocus", "--sync", window)
    result = await until_done(task, lambda: xdotool(display, "key", "--window", window, "Escape"))
    assert (result.granted, result.how) == (False, ConsentHow.PROMPT)


@pytest.mark.usefixtures("clean")
async def test_countdown_expiry_denies(display: str) -> None:
    task = asyncio.create_task(policy(display, timeout=2.0).decide(request()))
    await asyncio.to_thread(find_window, display, PROMPT_TITLE)
    result = await until_done(task)
    assert (result.granted, result.how) == (False, ConsentHow.TIMEOUT)


@pytest.mark.usefixtures("clean")
async def test_cancelled_request_takes_the_dialog_away(display: str) -> None:
    task = asyncio.create_task(policy(display).decide(request()))
    await asyncio.to_thread(find_window, display, PROMPT_TITLE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.usefixtures("clean")
async def test_display_that_cannot_start_falls_back_to_no_user() -> None:
    broken = ConsentPolicy(
        {"shell": "prompt"}, 5.0, environ={"DISPLAY": ":4093"}, stdin_is_tty=False
    )
    result = await broken.decide(request())
    assert (result.granted, result.how) == (False, ConsentHow.NO_USER)
    assert await broken.notice(request()) is None


@pytest.mark.usefixtures("clean")
async def test_notice_end_session_button(display: str) -> None:
    notice = await policy(display, kind_policy="notify").notice(request())
    assert notice is not None
    window = find_window(display, NOTICE_TITLE)
    ended = asyncio.create_task(notice.ended_by_customer())
    await until_done(ended, lambda: click(display, window, "right"))
    assert notice.ended
    await notice.close()


@pytest.mark.usefixtures("clean")
async def test_notice_close_takes_the_window_away(display: str) -> None:
    notice = await policy(display, kind_policy="notify").notice(request("view"))
    assert notice is not None
    find_window(display, NOTICE_TITLE)
    ended = asyncio.create_task(notice.ended_by_customer())
    await notice.close()
    await notice.close()  # idempotent
    assert windows_named(display, NOTICE_TITLE) == []
    assert not ended.done()  # closing is not the customer ending it
    assert not notice.ended
    ended.cancel()
    await asyncio.gather(ended, return_exceptions=True)


@pytest.mark.usefixtures("clean")
async def test_cancelled_twice_still_reaps_the_dialog(display: str) -> None:
    task = asyncio.create_task(policy(display).decide(request()))
    await asyncio.to_thread(find_window, display, PROMPT_TITLE)
    task.cancel()
    await asyncio.sleep(0)  # one step: it is now stopping the dialog, on its first wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
