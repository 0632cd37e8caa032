"""The web console in a real Chromium: signing in, live devices, a shell in xterm.js."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ..session_helpers import headless_agent
from .conftest import WebRig, sign_in

pytestmark = pytest.mark.integration


SCREEN_LINES = """() => {
    const buffer = helplineTerminal.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines;
}"""


def wait_for_line(page: Page, pattern: str) -> str:
    """Until a line of the terminal (scrollback included) matches ``pattern`` in full."""
    try:
        page.wait_for_function(
            "(p) => (" + SCREEN_LINES + ")().some((line) => new RegExp(p).test(line))",
            arg=f"^{pattern}$",
        )
    except PlaywrightTimeout:
        screen = "\n".join(page.evaluate(SCREEN_LINES)).rstrip()
        raise AssertionError(f"no line matching {pattern!r} on the terminal:\n{screen}") from None
    lines: list[str] = page.evaluate(SCREEN_LINES)
    return next(line for line in lines if re.fullmatch(pattern, line))


def wait_for_prompt(page: Page) -> None:
    """Until the shell printed something (its prompt): its start-up files have run, so
    ending the session now never kills a shell in the middle of them."""
    wait_for_line(page, r".*\S.*")


def test_sign_in_with_totp_shows_the_demo_agent_online(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/devices")
    row = page.locator("#devices tr", has_text="demo-agent")
    expect(row.locator("td.state")).to_have_text("online")
    cookies = page.context.cookies()
    session = [c for c in cookies if c["name"] == "__Host-helpline"]
    assert session, cookies
    assert session[0]["httpOnly"] and session[0]["secure"]
    assert session[0]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's scripts cannot read it


def test_shell_echo_hello_and_resize(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/devices")
    page.click("#devices a.device-name:text-is('demo-agent')")
    page.fill("#session-reason", "ticket 42")
    page.click("#open-shell")
    expect(page.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    page.locator("#terminal").click()
    page.keyboard.type("echo hel''lo\n")
    wait_for_line(page, "hello")
    # The window shrinks: the terminal follows, and the device's PTY gets the new size.
    page.keyboard.type("stty size\n")
    first = wait_for_line(page, r"\d+ \d+")
    assert first == "{1} {0}".format(
        *page.evaluate("[helplineTerminal.cols, helplineTerminal.rows]")
    )
    before = page.evaluate("[helplineTerminal.cols, helplineTerminal.rows]")
    page.set_viewport_size({"width": 800, "height": 600})
    page.wait_for_function(
        "([c, r]) => helplineTerminal.cols < c && helplineTerminal.rows < r", arg=before
    )
    cols, rows = page.evaluate("[helplineTerminal.cols, helplineTerminal.rows]")
    page.keyboard.type("clear; stty size\n")
    wait_for_line(page, f"{rows} {cols}")
    page.keyboard.type("exit\n")
    expect(page.locator("#shell-status")).to_have_text("Session ended: exited with status 0")
    wait_for_line(page, " process exited with status 0 ")


def test_failed_sign_in_is_explained_then_the_account_locks(web: WebRig) -> None:
    account = web.user("wrongpass", "technician")
    page = web.context().new_page()
    sign_in(page, "wrongpass", "not the password")
    message = page.locator("#login-message")
    failed = "Sign-in failed: the user name, password or one-time code is wrong."
    expect(message).to_have_text(failed)
    for _ in range(4):  # five failures in all: the lockout threshold
        page.fill("#username", "wrongpass")
        page.fill("#password", "still wrong")
        page.click("#sign-in")
        expect(message).not_to_have_text("Signing in…")
        expect(message).to_have_text(failed)
    users = {u["username"]: u for u in web.api("GET", "/api/v1/users")["users"]}
    assert users["wrongpass"]["locked_until"] is not None
    # Locked means locked: the right password is refused too, in the same words (a locked
    # account does not say so: that would tell that it exists), and nothing is signed in.
    page.fill("#username", "wrongpass")
    page.fill("#password", account["password"])
    page.click("#sign-in")
    expect(message).not_to_have_text("Signing in…")
    expect(message).to_have_text(failed)
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-helpline"]


def test_a_denied_session_is_shown_plainly(web: WebRig) -> None:
    # Nobody at this machine (no display, no terminal): "prompt" consent denies.
    with headless_agent(web.relay, web.directory, "unattended", {"shell": "prompt"}):
        page = web.admin_page()
        page.goto("/#/devices")
        expect(page.locator("#devices tr", has_text="unattended").locator("td.state")).to_have_text(
            "online"
        )
        page.goto("/#/shell/unattended?reason=please")
        page.click("#start-session")  # a deep link only fills the form in
        status = page.locator("#shell-status")
        expect(status).to_contain_text("The customer denied the session: ")
        expect(page.locator("#end-session")).to_be_disabled()
        wait_for_line(page, " denied by the customer ")
