"""Consent as the web console shows it, with the customer's real dialog on Xvfb: the wait
while the customer is asked, then the answer (allowed, or denied plainly)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

from agent.dialog import PROMPT_TITLE

from ..conftest import BIN, AgentProcess, enroll_agent
from ..test_consent_dialog import click, display, find_window
from .conftest import WebRig
from .test_web_console import wait_for_prompt

pytestmark = pytest.mark.integration

__all__ = ["display"]  # the Xvfb fixture, used by name


@contextmanager
def agent_with_display(web: WebRig, name: str, screen: str) -> Iterator[AgentProcess]:
    agent = enroll_agent(web.relay, web.directory, name, consent={"shell": "prompt"})
    with agent.log_path.open("ab") as log:
        agent.process = subprocess.Popen(
            [BIN / "helpline-agent", "-v", "run", "--config", agent.config_dir],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DISPLAY": screen},
        )
    try:
        yield agent
    finally:
        agent.stop()


@pytest.mark.parametrize(("corner", "outcome"), [("right", "allowed"), ("left", "denied")])
def test_the_consent_wait_then_the_answer(
    web: WebRig, display: str, corner: str, outcome: str
) -> None:
    name = f"front-desk-{outcome}"
    with agent_with_display(web, name, display):
        page = web.admin_page()
        page.goto("/#/devices")
        row = page.locator("#devices tr", has_text=name)
        expect(row.locator("td.state")).to_have_text("online")
        page.goto(f"/#/shell/{name}?reason=printer+setup")
        page.click("#start-session")  # a deep link only fills the form in
        status = page.locator("#shell-status")
        expect(status).to_have_text(f"waiting for the customer on {name} to accept…")
        window = find_window(display, PROMPT_TITLE)
        for _ in range(50):  # the Allow button wakes up a moment after the window shows
            click(display, window, corner)
            if "waiting" not in (status.text_content() or ""):
                break
            page.wait_for_timeout(300)
        if outcome == "allowed":
            expect(status).to_have_text(f"Connected to {name}.")
            wait_for_prompt(page)
            expect(page.locator("#end-session")).to_be_enabled()
        else:
            expect(status).to_contain_text("The customer denied the session: ")
            expect(page.locator("#end-session")).to_be_disabled()
