"""The web console under test: a real relay and agent on loopback, and Debian's Chromium
driven by Playwright (headless, ``executable_path``; no browser is downloaded).

One relay per test module (starting one takes seconds); each test gets its own
browser context (cookies, storage) so sign-ins never leak between tests. The
first admin signs in once per module through the sign-in page with a real TOTP
code; later contexts reuse that cookie (a TOTP code works only once).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from ..conftest import (
    BIN,
    AgentProcess,
    RelayProcess,
    enroll_agent,
    init_relay,
    stop_process,
    totp_now,
)
from ..files_helpers import set_roots
from ..helpers import admin_token, rest

CHROMIUM = os.environ.get("HELPLINE_CHROMIUM", "/usr/bin/chromium")
#: Where the README's screenshots are written (by test_web_screenshots).
SCREENSHOTS = Path(__file__).resolve().parents[3] / "console" / "web" / "screenshots"
TIMEOUT_MS = 20_000


@dataclass
class WebRig:
    relay: RelayProcess
    agent: AgentProcess
    browser: Browser
    directory: Path
    files_root: Path  # the demo agent's only files root
    token: str  # the first admin's bearer token, for setting things up over REST
    admin_state: dict[str, Any] = field(default_factory=dict)
    agents: list[AgentProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.relay.url

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = rest(self.relay, method, path, token=self.token, body=body)
        assert status < 300, (status, answer)
        return answer

    def context(self, state: dict[str, Any] | None = None) -> BrowserContext:
        context = self.browser.new_context(
            base_url=self.url,
            ignore_https_errors=True,  # the relay's own CA; tests/pin it elsewhere
            storage_state=state,  # type: ignore[arg-type]
            viewport={"width": 1280, "height": 800},
            accept_downloads=True,
        )
        context.set_default_timeout(TIMEOUT_MS)
        return context

    def admin_page(self) -> Page:
        return self.context(self.admin_state).new_page()

    def user(self, username: str, role: str, group: str | None = "default") -> dict[str, str]:
        """A new account without a second factor (tests sign it in more than once)."""
        body = self.api(
            "POST",
            "/api/v1/users",
            {"username": username, "role": role, "full_name": username, "totp_required": False},
        )
        if group is not None and role == "technician":
            self.api("POST", "/api/v1/grants", {"username": username, "group": group})
        return {"username": username, "password": body["password"]}

    def start_agent(self, name: str, hostname: str | None = None) -> AgentProcess:
        """A real agent; with ``hostname``, in a UTS namespace of its own that has it."""
        agent = enroll_agent(self.relay, self.directory, name)
        if hostname is None:
            agent.start()
        else:
            launcher = (
                "import os, socket, sys; socket.sethostname(sys.argv[1]);"
                " os.execv(sys.argv[2], sys.argv[2:])"
            )
            log = agent.log_path.open("ab")
            agent.process = subprocess.Popen(
                [
                    shutil.which("unshare") or "unshare",
                    "--uts",
                    sys.executable,
                    "-c",
                    launcher,
                    hostname,
                    str(BIN / "helpline-agent"),
                    "-v",
                    "run",
                    "--config",
                    str(agent.config_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.agents.append(agent)
        return agent


def sign_in(page: Page, username: str, password: str, otp: str = "") -> None:
    page.goto("/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.fill("#otp", otp)
    page.click("#sign-in")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebRig]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (see .ci/run)")
    directory = tmp_path_factory.mktemp("web")
    relay = init_relay(directory)
    relay.start()
    consent = {"shell": "allow", "files": "allow"}
    agent = enroll_agent(relay, directory, "demo-agent", consent=consent)
    files_root = directory / "device-files"
    files_root.mkdir()
    set_roots(agent.config_dir, [files_root])
    agent.start()
    # This step's code is for the sign-in page; the REST set-up takes the one before.
    token = admin_token(relay, step_offset=-1)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            rig = WebRig(relay, agent, browser, directory, files_root, token)
            context = rig.context()
            page = context.new_page()
            sign_in(
                page,
                relay.admin["username"],
                relay.admin["password"],
                totp_now(relay.admin["totp_secret"]),
            )
            expect(page.locator("#signed-in-as")).to_contain_text(relay.admin["username"])
            rig.admin_state = context.storage_state()
            context.close()
            try:
                yield rig
            finally:
                browser.close()
    finally:
        for extra in rig.agents if "rig" in locals() else []:
            stop_process(extra.process)
        agent.stop()
        relay.stop()
