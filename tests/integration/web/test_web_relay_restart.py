"""The relay stops under open pages and comes back: the shell says why it ended, the
devices page reconnects by itself, and the sign-in still works (its CSRF key is kept on
disk). A relay of its own (this one is stopped on purpose)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .conftest import WebRig
from .test_web_console import wait_for_prompt

pytestmark = pytest.mark.integration


def test_pages_survive_a_relay_restart(web: WebRig) -> None:
    context = web.context(web.admin_state)
    shell = context.new_page()
    shell.goto("/#/shell/demo-agent")
    shell.click("#start-session")  # a deep link only fills the form in
    expect(shell.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    wait_for_prompt(shell)
    devices = context.new_page()
    devices.goto("/#/devices")
    expect(devices.locator("#live-state")).to_have_text("● live")

    csrf = devices.evaluate("fetch('/web/session').then((r) => r.json()).then((j) => j.csrf)")
    web.relay.stop()
    expect(shell.locator("#shell-status")).to_have_text("Session ended: the relay is shutting down")
    expect(devices.locator("#live-state")).to_have_text("reconnecting…")
    web.relay.start()
    expect(devices.locator("#live-state")).to_have_text("● live", timeout=30_000)
    row = devices.locator("#devices tr", has_text="demo-agent")
    expect(row.locator("td.state")).to_have_text("online", timeout=30_000)
    # The page's CSRF token from before the restart still works.
    status = devices.evaluate(
        """async (csrf) => {
            const response = await fetch('/api/v1/groups', {method: 'POST',
                headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'},
                body: JSON.stringify({name: 'after-restart'})});
            return response.status;
        }""",
        csrf,
    )
    assert status == 201
