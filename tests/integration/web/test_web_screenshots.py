"""The README's screenshots of the web console, taken by the test suite's browser from the
real pages. They land in a temporary directory, or, with ``HELPLINE_UPDATE_SCREENSHOTS=1``,
in console/web/screenshots/ (so a plain test run leaves the checkout as it was)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import SCREENSHOTS, WebRig
from .test_web_console import wait_for_line

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


def test_screenshots_of_the_main_pages(web: WebRig, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("HELPLINE_UPDATE_SCREENSHOTS") == "1" else tmp_path

    def shot(page: Page, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        assert path.read_bytes().startswith(PNG)

    (web.files_root / "logs").mkdir(exist_ok=True)
    (web.files_root / "logs" / "install.log").write_text("installed\n")
    (web.files_root / "notes.txt").write_text("call back at 3pm\n")
    signin = web.context().new_page()
    signin.goto("/")
    expect(signin.locator("#login-form")).to_be_visible()
    shot(signin, "sign-in")

    page = web.admin_page()
    page.goto("/#/devices")
    expect(page.locator("#devices tr", has_text="demo-agent").locator("td.state")).to_have_text(
        "online"
    )
    shot(page, "devices")
    page.click("#devices a.device-name:text-is('demo-agent')")
    expect(page.locator("#device-hostname")).not_to_be_empty()
    page.fill("#session-reason", "ticket 1234: printer offline")
    shot(page, "device")
    page.click("#open-shell")
    expect(page.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    page.locator("#terminal").click()
    page.keyboard.type("uname -sr; echo shell-ready\n")
    wait_for_line(page, "shell-ready")
    shot(page, "shell")
    page.keyboard.type("exit\n")
    expect(page.locator("#shell-status")).to_contain_text("Session ended")
    page.goto("/#/files/demo-agent?reason=collect+logs")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#file-list")).to_contain_text("notes.txt")
    shot(page, "files")
    page.goto("/#/sessions")
    expect(page.locator("#session-history table")).to_be_visible()
    shot(page, "sessions")
    page.goto("/#/admin")
    expect(page.locator("#users")).to_be_visible()
    shot(page, "admin")
    page.goto("/#/audit")
    expect(page.locator("#chain-status")).to_contain_text("Hash chain verified")
    shot(page, "audit")
    page.goto("/#/recordings")
    page.locator("#recordings a.play").first.click()
    expect(page.locator("#player .ap-player")).to_be_visible()
    page.select_option("#speed", "8")
    expect(page.locator("#player")).to_have_attribute("data-ended", "true", timeout=30_000)
    shot(page, "recording")
